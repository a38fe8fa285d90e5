"""A private ActiveMQ broker in a folder: Debian's ``activemq`` package, STOMP on 127.0.0.1.

For tests, benchmarks and one-machine setups. Debian's default instance speaks OpenWire only
(README.Debian of the ``activemq`` package); this writes its own ``activemq.xml`` with a
STOMP connector (``activemq-stomp.jar`` ships in ``libactivemq-java``), an OpenWire one
when asked (what MOSIP's Java client speaks) and KahaDB in the folder, then runs ``activemq.jar start`` in the
foreground of a child process. Starts in about a second and a half on 2 cores.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from dedup.errors import BrokerError

ACTIVEMQ_HOME = Path("/usr/share/activemq")
ACTIVEMQ_JAR = ACTIVEMQ_HOME / "bin" / "activemq.jar"

_CONFIG = """<beans xmlns="http://www.springframework.org/schema/beans"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="http://www.springframework.org/schema/beans http://www.springframework.org/schema/beans/spring-beans-2.0.xsd
  http://activemq.apache.org/schema/core http://activemq.apache.org/schema/core/activemq-core.xsd">
  <broker xmlns="http://activemq.apache.org/schema/core" useJmx="false" brokerName="{name}"
          dataDirectory="{data}" schedulerSupport="false" persistent="true">
    <persistenceAdapter><kahaDB directory="{data}/kahadb"/></persistenceAdapter>
    <transportConnectors>
      <transportConnector name="stomp" uri="stomp://127.0.0.1:{stomp}"/>{openwire}
    </transportConnectors>
  </broker>
</beans>
"""


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def available() -> bool:
    """Whether Debian's ActiveMQ and a Java runtime are installed."""
    return ACTIVEMQ_JAR.exists() and shutil.which("java") is not None


@dataclass
class LocalBroker:
    """One running broker; ``stop()`` ends it (``kill()`` like a power cut)."""

    root: Path
    stomp_port: int
    openwire_port: int | None
    process: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0
    log_path: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"stomp://127.0.0.1:{self.stomp_port}"

    def start(self, timeout: float = 60.0) -> LocalBroker:
        if not available():
            raise BrokerError("Debian's activemq package (and a Java runtime) is not installed: apt-get install activemq")
        conf, data = self.root / "conf", self.root / "data"
        conf.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        openwire = (f'\n      <transportConnector name="openwire" uri="tcp://127.0.0.1:{self.openwire_port}"/>'
                    if self.openwire_port else "")
        (conf / "activemq.xml").write_text(_CONFIG.format(name=f"dedup-{self.stomp_port}", data=data,
                                                          stomp=self.stomp_port, openwire=openwire), encoding="utf-8")
        self.log_path = self.root / "broker.log"
        cmd = ["java", "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
               f"-Dactivemq.home={ACTIVEMQ_HOME}", f"-Dactivemq.base={self.root}", f"-Dactivemq.conf={conf}",
               f"-Dactivemq.data={data}", "-jar", str(ACTIVEMQ_JAR), "start", f"xbean:file:{conf / 'activemq.xml'}"]
        start = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        while time.perf_counter() - start < timeout:
            if self.process.poll() is not None:
                raise BrokerError(f"the broker exited at start (code {self.process.returncode}); see {self.log_path}")
            if _listening(self.stomp_port):
                self.started_in = time.perf_counter() - start
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the broker did not listen on {self.stomp_port} within {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        p = self.process
        if p is None or p.poll() is not None:
            return
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout)


def start_broker(root: Path, openwire: bool = False) -> LocalBroker:
    """Start a private broker with its files in ``root`` on free ports."""
    return LocalBroker(Path(root), free_port(), free_port() if openwire else None).start()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
