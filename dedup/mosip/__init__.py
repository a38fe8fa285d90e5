"""MOSIP mode: dedup as an ABIS of MOSIP, the open national-ID platform.

MOSIP's registration processor talks to each ABIS through two message queues of an
ActiveMQ broker (requests on ``mosip-to-abis``, responses on ``abis-to-mosip``), with one
JSON object per message (MOSIP ABIS API 0.9; facts and sources in README "MOSIP"). This
package speaks that interface over STOMP:

- ``codes``: the failure reasons 1-18;
- ``messages``: parsing and validating requests (in MOSIP's check order), building responses;
- ``datashare``: fetching the CBEFF at a referenceURL with a cached JWT;
- ``crypto``: MOSIP 1.2's VER_R2 datashare encryption;
- ``cbeff`` and ``iso19794_5``: the face image inside the CBEFF;
- ``threshold``: targetFPIR -> threshold;
- ``handler``: the six operations on the gallery and the PostgreSQL map;
- ``consumer``: the queue loop (FIFO, at least once, replay of answered requests);
- ``localbroker``: a private ActiveMQ instance (tests, benchmarks, one-machine setups);
- ``status``: what ``dedup abis status`` reports.
"""
