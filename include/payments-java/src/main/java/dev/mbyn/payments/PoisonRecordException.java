package dev.mbyn.payments;

/**
 * A record this service cannot use, with the dead-letter contract's reason code ({@code dlq.reason}).
 *
 * <p>Reasons are the shared codes of mbyn's codec contract ({@code include/mbyn/contracts/codec.py}): {@link #NULL_KEY}, {@link #NULL_VALUE},
 * {@link #OVERSIZE}, {@link #NOT_JSON}, {@link #UNKNOWN_SCHEMA_VERSION}, {@link #SCHEMA_VIOLATION} (the
 * verdicts of {@link RecordCodec}) and {@link #UNEXPECTED_ERROR} (anything else raised while handling one
 * record). The same codes are used by the Python runtime ({@code mbyn.errors.PoisonRecordError}) and the
 * Go tracker.
 */
final class PoisonRecordException extends Exception {
    static final String NULL_KEY = "null_key";
    static final String NULL_VALUE = "null_value";
    static final String OVERSIZE = "oversize";
    static final String NOT_JSON = "not_json";
    static final String UNKNOWN_SCHEMA_VERSION = "unknown_schema_version";
    static final String SCHEMA_VIOLATION = "schema_violation";
    static final String UNEXPECTED_ERROR = "unexpected_error";

    private static final long serialVersionUID = 1L;
    private final String reason;

    PoisonRecordException(String reason, String message) {
        super(message);
        this.reason = reason;
    }

    PoisonRecordException(String reason, String message, Throwable cause) {
        super(message, cause);
        this.reason = reason;
    }

    /** The contract's reason code. */
    String reason() {
        return reason;
    }
}
