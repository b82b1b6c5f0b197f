"""The one error type of the simulator: a CloudStack API error with its codes."""

from __future__ import annotations

# ApiErrorCode values the simulator uses
UNAUTHORIZED = 401
PARAM_ERROR = 431
UNSUPPORTED_ACTION = 432
INTERNAL_ERROR = 530
ACCOUNT_ERROR = 531
RESOURCE_IN_USE = 536

# CSExceptionErrorCode values
CS_INVALID_PARAMETER = 4350
CS_CLOUD_RUNTIME = 4250
CS_RESOURCE_IN_USE = 4375
CS_PERMISSION_DENIED = 4365

BAD_CREDENTIALS = "unable to verify user credentials and/or request signature"


class ApiError(Exception):
    """A CloudStack error answer: HTTP status == ``errorcode``; ``cserrorcode`` optional."""

    def __init__(self, errorcode: int, errortext: str, cserrorcode: int | None = None) -> None:
        super().__init__(errortext)
        self.errorcode = errorcode
        self.errortext = errortext
        self.cserrorcode = cserrorcode

    def body(self) -> dict[str, object]:
        """The inner dict CloudStack serialises as ``ExceptionResponse``."""
        out: dict[str, object] = {"uuidList": [], "errorcode": self.errorcode}
        if self.cserrorcode is not None:
            out["cserrorcode"] = self.cserrorcode
        out["errortext"] = self.errortext
        return out


def missing(command: str, name: str) -> ApiError:
    """431: a required parameter is absent."""
    return ApiError(
        PARAM_ERROR,
        f"Unable to execute API command {command.lower()} due to missing parameter {name}",
        CS_INVALID_PARAMETER,
    )


def invalid(command: str, name: str, value: str) -> ApiError:
    """431: a parameter names an entity that does not exist (CloudStack's wording)."""
    return ApiError(
        PARAM_ERROR,
        f"Unable to execute API command {command.lower()} due to "
        f"invalid value. Invalid parameter {name} value={value} due to incorrect long "
        "value format, or entity does not exist or due to incorrect parameter "
        "annotation for the field in api cmd class.",
        CS_INVALID_PARAMETER,
    )


def bad_value(text: str) -> ApiError:
    """431: InvalidParameterValueException with ``text``."""
    return ApiError(PARAM_ERROR, text, CS_INVALID_PARAMETER)


def permission_denied(text: str) -> ApiError:
    """531: PermissionDeniedException (ApiErrorCode.ACCOUNT_ERROR) with ``text``."""
    return ApiError(ACCOUNT_ERROR, text, CS_PERMISSION_DENIED)


def internal(text: str) -> ApiError:
    """530: a CloudRuntimeException/RuntimeException (ApiErrorCode.INTERNAL_ERROR) with ``text``."""
    return ApiError(INTERNAL_ERROR, text, CS_CLOUD_RUNTIME)
