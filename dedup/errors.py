"""Domain errors. Library code raises these; only ``dedup.cli`` turns them into messages
and exit codes, so a user never sees a traceback for bad input."""

from __future__ import annotations


class DedupError(Exception):
    """Base class: a problem the user can act on. ``str(err)`` is the message shown."""

    exit_code = 1


class ConfigError(DedupError):
    """A setting is unknown, malformed or out of range."""

    exit_code = 2


class InvalidParameter(DedupError):
    """A command or function argument is out of range or inconsistent."""

    exit_code = 2


class InsufficientResources(DedupError):
    """The work would not fit in the memory or disk that is available."""

    exit_code = 3


class GalleryError(DedupError):
    """The gallery on disk is missing, corrupt, or does not match what is asked."""

    exit_code = 4


class ModelMismatch(GalleryError):
    """Templates from one face model were offered to a gallery built for another."""


class DiskError(DedupError):
    """A write ran out of disk (ENOSPC, quota) or hit an I/O error; what was written before is intact."""

    exit_code = 10


class BadInput(DedupError):
    """An input file (manifest, template file, job file) cannot be used as given."""

    exit_code = 2


class PermissionDenied(DedupError):
    """The acting user's role does not allow this command, or this object is not theirs."""

    exit_code = 5


class NotYours(PermissionDenied):
    """An adjudicator acted on a case they do not hold: one answer whether the case exists, who
    holds it, how it was decided or how many candidates it has (``reason`` is for the audit log only)."""

    def __init__(self, case_id: int, reason: str) -> None:
        super().__init__(f"case {case_id} is not yours: only the adjudicator holding a case can see it or act on it; "
                         "take one with Next case (`dedup queue next`)")
        self.reason = reason


class Unauthenticated(DedupError):
    """No valid login, session or API token came with the request (HTTP 401)."""

    exit_code = 5


class NotFound(DedupError):
    """A named object (enrolment, batch, case, user, centre, deployment) does not exist."""

    exit_code = 6


class Conflict(DedupError):
    """The request contradicts the current state (a case held by someone else, a name taken)."""

    exit_code = 7


class StoreError(DedupError):
    """The database or the deployment's store cannot be reached or is inconsistent."""

    exit_code = 8


class FaceModelError(DedupError):
    """A face model file is missing, malformed, or does not match its settings."""

    exit_code = 2


class ModelPackageError(FaceModelError):
    """A pinned package that ships built-in model weights is missing, of another version, or altered."""

    exit_code = 2


class ProcessingFailed(DedupError):
    """Work could not run at all (for example worker processes keep dying); nothing is written."""

    exit_code = 9


class ClusterError(DedupError):
    """The Dask cluster cannot be reached, has no usable worker, or keeps losing workers."""

    exit_code = 9


class BrokerError(DedupError):
    """The message broker (MOSIP mode) cannot be reached, refuses the login, or drops the connection."""

    exit_code = 9


class MosipFailure(DedupError):
    """A MOSIP ABIS request fails with one of the interface's failure reasons (``code``, 1-18).

    It becomes a ``returnValue "2"`` response with that ``failureReason``; the detail stays
    in dedup's log and ``dedup abis status``, never in the response.
    """

    exit_code = 2

    def __init__(self, code: int, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class Throttled(DedupError):
    """One client asks too much at once or too often (HTTP 429): failed logins from its address,
    uploads in progress for its token. ``retry_after`` is in seconds."""

    exit_code = 10
    http_status = 429

    def __init__(self, message: str, retry_after: int = 0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimeout(DedupError):
    """A request body came too slowly or stopped coming (HTTP 408)."""

    exit_code = 10
    http_status = 408


class Busy(DedupError):
    """The server has no free worker for this request within its wait (HTTP 503); try again."""

    exit_code = 10
    http_status = 503


class NoOperatingPoint(ConfigError):
    """No threshold can be known for the face model: no model card, no calibration, no explicit setting."""

    exit_code = 2
