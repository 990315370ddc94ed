"""Exceptions raised by melo. Every message names the offending module, field or value."""


class MeloError(Exception):
    """Base class of all melo errors."""


class MeloConfigError(MeloError, ValueError):
    """A configuration that cannot be applied to this model (unknown module, wrong type, order)."""


class MeloEditError(MeloError, ValueError):
    """An edit request that is malformed (empty batch, mismatched lengths, wrong target type)."""


class MeloCapacityError(MeloError):
    """The configured maximum number of blocks would be exceeded."""


class MeloLoadError(MeloError):
    """A saved adapter that does not fit the model it is loaded onto."""


class MeloRoutingError(MeloError, RuntimeError):
    """A forward pass in which a target module ran before the router had routed the batch."""


class MeloDataError(MeloError):
    """A benchmark data file that is missing or malformed; the message says which and what to do."""
