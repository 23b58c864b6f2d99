"""The message contract: the envelope every producer writes, the codec every reader uses, dead letters."""

from mbyn.contracts.codec import decode_record
from mbyn.contracts.envelope import Envelope, encode, make_envelope, validate

__all__ = ["Envelope", "decode_record", "encode", "make_envelope", "validate"]
