"""The message contract: the envelope every producer writes and every consumer reads."""

from mbyn.contracts.envelope import Envelope, decode, encode, make_envelope, validate

__all__ = ["Envelope", "decode", "encode", "make_envelope", "validate"]
