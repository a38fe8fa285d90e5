"""MOSIP ABIS failure reasons (API spec 0.9 "Failure Reasons"; the same constants in
mosip-mock-services ``mock-abis/.../constant/FailureReasonsConstants.java`` and registration
``abis-middleware-stage/.../constants/FailureReason.java``, which stops at 17)."""

from __future__ import annotations

from enum import IntEnum


class Failure(IntEnum):
    """``failureReason`` values of a ``returnValue "2"`` response."""

    INTERNAL_ERROR = 1  # internal error - unknown
    ABORTED = 2
    UNEXPECTED_ERROR = 3
    INVALID_STRUCTURE = 4  # unable to serve the request - invalid request structure
    MISSING_REFERENCE_ID = 5
    MISSING_REQUEST_ID = 6
    UNABLE_TO_FETCH = 7  # unable to fetch biometric details using referenceURL
    MISSING_REFERENCE_URL = 8
    MISSING_REQUESTTIME = 9
    REFERENCE_ID_EXISTS = 10  # MOSIP treats it as success (AbisMiddleWareStage.isInsertSuccess)
    CBEFF_NO_DATA = 11
    REFERENCE_ID_NOT_FOUND = 12
    INVALID_VERSION = 13
    INVALID_ID = 14
    INVALID_REQUESTTIME_FORMAT = 15
    INVALID_CBEFF_FORMAT = 16
    DATASHARE_EXPIRED = 17
    QUALITY_CHECK_FAILED = 18


RETURN_SUCCESS = "1"
RETURN_FAILED = "2"
