"""Every error unlearnkit raises for a user's mistake.

Each class also subclasses the built-in exception that fits, so that callers who catch
``ValueError`` or ``KeyError`` keep working, and callers who want to catch only unlearnkit's
errors catch :class:`UnlearnkitError`.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DataError",
    "DownloadError",
    "DuplicateNameError",
    "ForgetVerdictWarning",
    "ImplementationFallbackWarning",
    "InvalidParameterError",
    "InvalidSplitError",
    "LedgerBusyError",
    "LedgerError",
    "ModelError",
    "UnknownNameError",
    "UnlearnkitError",
    "UnsupportedModelError",
    "UnsupportedScenarioWarning",
    "short_repr",
]


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters, for error messages: a message stays one
    short line, even for a 5000-digit int, whose ``repr`` Python itself refuses."""
    try:
        text = repr(value)
    except ValueError:  # an int too large to convert to a string
        return "<an int of thousands of digits>"
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


class UnlearnkitError(Exception):
    """Base class of every error that unlearnkit raises on purpose."""


class UnknownNameError(UnlearnkitError, KeyError):
    """A name that no registry holds (method, dataset, model, parameter)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(UnlearnkitError, ValueError):
    """A name registered twice in one registry."""


class InvalidParameterError(UnlearnkitError, ValueError):
    """A hyper-parameter or argument with a value out of its range or of the wrong type."""


class InvalidSplitError(UnlearnkitError, ValueError):
    """A forget request that cannot be honoured: unknown class, bad index, empty or total."""


class DataError(UnlearnkitError, ValueError):
    """Dataset files that are missing, malformed or inconsistent."""


class DownloadError(DataError):
    """A download that failed or whose checksum did not match."""


class CheckpointError(UnlearnkitError, ValueError):
    """A checkpoint that is missing, corrupt, or does not match the model it is loaded into."""


class ModelError(UnlearnkitError, ValueError):
    """A model that cannot be used: non-finite weights, wrong output shape, unknown architecture."""


class UnsupportedModelError(ModelError):
    """A method that cannot handle a feature of the model or of its inputs (integer token ids,
    no output layer it can find, no trainable parameter...), raised before any work.

    The message names the method, the feature and what to do instead.
    """

    def __init__(self, method: str, feature: str, instead: str) -> None:
        self.method, self.feature, self.instead = method, feature, instead
        super().__init__(f"Method {method!r} cannot handle {feature}. {instead}")


class UnsupportedScenarioWarning(UserWarning):
    """A method asked for a scenario it is not designed for (it runs, with no guarantee)."""


class ForgetVerdictWarning(UserWarning):
    """An unlearned model's oracle-free verdict is ``not forgotten`` or ``utility lost``: the
    request was not met (the message gives the numbers and what to try)."""


class ImplementationFallbackWarning(UserWarning):
    """Per-sample gradients computed by a slower implementation than the per-layer hooks
    (torch.func's vmap, or a loop over samples), because the faster ones cannot read the
    model; the message says which one and why."""


class LedgerError(UnlearnkitError, ValueError):
    """A ledger of deletion requests that cannot be used as asked: no ledger at the address,
    unknown or already erased sample ids, data that differ from the ledger's, a changed chain."""


class LedgerBusyError(LedgerError):
    """Another process is applying requests to the same ledger (one ``apply`` at a time)."""
