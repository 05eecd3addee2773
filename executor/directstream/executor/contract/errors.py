"""One exception root for directstream, with two branches that say what to do about a failure.

- :class:`RetryableError`: the world was not ready (a broker down, a database unreachable, an API
  call refused for now). Nothing moved; the same step is tried again after a backoff.
- :class:`PermanentError`: the input is wrong (a malformed spec or work unit, bad options, lost
  offsets under ``onDataLoss: fail``). Retrying the same input cannot help: a person must act.

Every error the driver, the operator, the CLI and the executor raise on purpose derives from one of
the two, so a caller decides by branch, never by a list of unrelated classes.
"""

from __future__ import annotations


class DirectStreamError(Exception):
    """The root of every error directstream raises on purpose."""


class RetryableError(DirectStreamError):
    """A failure of the environment; nothing moved, the same step may succeed later."""


class PermanentError(DirectStreamError):
    """A failure of the input; it stays until the input changes."""


class ContractError(PermanentError, ValueError):
    """A work unit or result document that does not follow the contract."""


class ConfigurationError(PermanentError, ValueError):
    """A work unit asks for something that cannot run (bad sink options, bad client config,
    missing secret); reported as bad input (exit code 2), never retried as is."""
