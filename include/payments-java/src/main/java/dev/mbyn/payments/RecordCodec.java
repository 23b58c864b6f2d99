package dev.mbyn.payments;

import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.DateTimeException;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import tools.jackson.core.JacksonException;
import tools.jackson.core.StreamReadConstraints;
import tools.jackson.core.json.JsonFactory;
import tools.jackson.databind.DeserializationFeature;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.ObjectMapper;
import tools.jackson.databind.json.JsonMapper;

/**
 * Decode and validate one record of a catalog topic: exactly one verdict, the value tree or a
 * {@link PoisonRecordException} with the contract's reason code.
 *
 * <p>The checks run in the contract's order, the first that applies wins: {@code null_key} (the topic has a
 * key field), {@code null_value} (not on a compacted topic, where null is a tombstone), {@code oversize}
 * (more than {@value #MAX_VALUE_BYTES} bytes), {@code not_json} (strict RFC 8259 UTF-8 JSON: no byte-order
 * mark, NaN/Infinity, raw control characters, trailing data, lone surrogate escapes, numbers beyond the
 * float64 range (floats and integers alike), nesting deeper than {@value #MAX_DEPTH}), then for a JSON object whose
 * {@code schema_version} is not the integer 1 {@code unknown_schema_version}, and {@code schema_violation}
 * for a value that is not an object, fails the topic's JSON Schema, has a date/time that is not on the
 * calendar, a string with U+0000 or an integer outside the signed 64-bit range. Duplicate object keys:
 * the last one wins. Floats are read as float64 (as Python and Go read them, so all three compare the same
 * numbers with the schema's bounds), integers exactly (long or {@link BigInteger}).
 *
 * <p>Thread-safe; never throws anything but {@link PoisonRecordException}.
 */
final class RecordCodec {
    /** Largest value accepted (512 KiB), as {@code mbyn.contracts.envelope.MAX_VALUE_BYTES}. */
    static final int MAX_VALUE_BYTES = 512 * 1024;
    /** Deepest nesting of arrays and objects accepted; {@code []} is one level. */
    static final int MAX_DEPTH = 512;
    /** {@code YYYY-MM-DDTHH:MM:SS[.f+](Z|±HH:MM)}: what the catalog's timestamp pattern admits, in groups. */
    private static final Pattern TIMESTAMP = Pattern.compile(
            "(\\d{4})-(\\d{2})-(\\d{2})T(\\d{2}):(\\d{2}):(\\d{2})(?:\\.\\d+)?(?:Z|[+-](\\d{2}):(\\d{2}))");
    private static final Pattern DATE = Pattern.compile("(\\d{4})-(\\d{2})-(\\d{2})");
    private static final BigInteger LONG_MIN = BigInteger.valueOf(Long.MIN_VALUE);
    private static final BigInteger LONG_MAX = BigInteger.valueOf(Long.MAX_VALUE);
    /** The largest float64, exactly: an integer beyond it is out of the float64 range like {@code 1e400}. */
    private static final BigInteger FLOAT64_MAX = new java.math.BigDecimal(Double.MAX_VALUE).toBigIntegerExact();

    private final TopicSchema schema;
    private final ObjectMapper mapper;
    /** Payload fields checked against the calendar besides {@code event_time} (pattern starts with a date). */
    private final List<String> dateFields;

    RecordCodec(TopicSchema schema) {
        this.schema = schema;
        this.dateFields = schema.dateFields();
        // Only the value size bounds numbers, strings and names; the depth limit is the contract's.
        StreamReadConstraints limits = StreamReadConstraints.builder()
                .maxNestingDepth(MAX_DEPTH)
                .maxNumberLength(MAX_VALUE_BYTES)
                .maxStringLength(MAX_VALUE_BYTES)
                .maxNameLength(MAX_VALUE_BYTES)
                .build();
        // Floats as float64, like the Python and Go codecs: 1e-400 is 0, 1000000.00000000001 is 1000000.
        this.mapper = JsonMapper.builder(JsonFactory.builder().streamReadConstraints(limits).build())
                .disable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
                .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
                .build();
    }

    /** The topic's logical name. */
    String topic() {
        return schema.topic();
    }

    /** The value of a usable record as a JSON tree (an object; null for a tombstone), else the reason why not. */
    JsonNode decode(byte[] key, byte[] value) throws PoisonRecordException {
        if (key == null && schema.keyed()) {
            throw new PoisonRecordException(PoisonRecordException.NULL_KEY, "the record has no key; "
                    + schema.topic() + " is keyed");
        }
        if (value == null) {
            if (schema.compacted()) {
                return null;
            }
            throw new PoisonRecordException(PoisonRecordException.NULL_VALUE, "the record value is null");
        }
        if (value.length > MAX_VALUE_BYTES) {
            throw new PoisonRecordException(PoisonRecordException.OVERSIZE, "value is " + value.length
                    + " bytes; the limit is " + MAX_VALUE_BYTES);
        }
        JsonNode tree = parse(value);
        if (!tree.isObject()) {
            throw violation("value is a JSON " + tree.getNodeType().name().toLowerCase(Locale.ROOT) + ", not an object");
        }
        JsonNode version = tree.get("schema_version");
        if (version == null || !version.isIntegralNumber() || !version.canConvertToLong()
                || version.longValue() != schema.schemaVersion()) {
            throw new PoisonRecordException(PoisonRecordException.UNKNOWN_SCHEMA_VERSION, "schema_version "
                    + (version == null ? "is missing" : abbreviate(version.toString()) + " is not " + schema.schemaVersion()));
        }
        List<String> violations;
        try {
            violations = schema.violations(tree);
        } catch (RuntimeException e) {
            throw new PoisonRecordException(PoisonRecordException.SCHEMA_VIOLATION, schema.topic()
                    + ": value cannot be validated: " + e, e);
        }
        if (!violations.isEmpty()) {
            throw violation(schema.topic() + ": " + String.join("; ", violations.subList(0, Math.min(5, violations.size()))));
        }
        checkValues(tree, "");
        checkTimestamp("event_time", tree.get("event_time"));
        JsonNode payload = tree.path("payload");
        for (String field : dateFields) {
            checkTimestamp("payload/" + field, payload.get(field));
        }
        return tree;
    }

    /** Strict RFC 8259 parse; {@code not_json} for anything else. */
    private JsonNode parse(byte[] value) throws PoisonRecordException {
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(value))
                    .toString();
        } catch (CharacterCodingException e) {
            throw new PoisonRecordException(PoisonRecordException.NOT_JSON, "value is not UTF-8: " + e, e);
        }
        if (!text.isEmpty() && text.charAt(0) == '\uFEFF') {
            throw new PoisonRecordException(PoisonRecordException.NOT_JSON, "value starts with a byte-order mark");
        }
        if (isJsonWhitespace(text)) {
            throw new PoisonRecordException(PoisonRecordException.NOT_JSON, "value is empty");
        }
        JsonNode tree;
        try {
            tree = mapper.readTree(text);
        } catch (JacksonException e) {
            throw new PoisonRecordException(PoisonRecordException.NOT_JSON, "value is not JSON: " + e.getOriginalMessage(), e);
        } catch (RuntimeException e) {
            // The parser choking on what it read (a number it cannot convert, say): still not JSON we can use.
            throw new PoisonRecordException(PoisonRecordException.NOT_JSON, "value cannot be parsed: " + e, e);
        }
        checkText(tree);
        return tree;
    }

    private static boolean isJsonWhitespace(String text) {
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
                return false;
            }
        }
        return true;
    }

    /** What the contract refuses but Jackson lets through: lone surrogate escapes, numbers beyond float64. */
    private static void checkText(JsonNode node) throws PoisonRecordException {
        if (node.isObject()) {
            for (Map.Entry<String, JsonNode> entry : node.properties()) {
                checkSurrogates(entry.getKey());
                checkText(entry.getValue());
            }
        } else if (node.isArray()) {
            for (JsonNode element : node.values()) {
                checkText(element);
            }
        } else if (node.isString()) {
            checkSurrogates(node.stringValue());
        } else if (node.isFloatingPointNumber() && !Double.isFinite(node.doubleValue())
                || node.isBigInteger() && node.bigIntegerValue().abs().compareTo(FLOAT64_MAX) > 0) {
            throw new PoisonRecordException(PoisonRecordException.NOT_JSON, "number " + abbreviate(node.toString())
                    + " is out of the float64 range");
        }
    }

    private static void checkSurrogates(String text) throws PoisonRecordException {
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < text.length() && Character.isLowSurrogate(text.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                throw new PoisonRecordException(PoisonRecordException.NOT_JSON,
                        String.format("lone UTF-16 surrogate \\u%04x in a string", (int) c));
            }
        }
    }

    /** Schema rules the JSON Schema cannot say: no U+0000 in any string, integers within signed 64 bits. */
    private static void checkValues(JsonNode node, String path) throws PoisonRecordException {
        if (node.isObject()) {
            for (Map.Entry<String, JsonNode> entry : node.properties()) {
                checkNul(entry.getKey(), path + "/" + entry.getKey());
                checkValues(entry.getValue(), path + "/" + entry.getKey());
            }
        } else if (node.isArray()) {
            int index = 0;
            for (JsonNode element : node.values()) {
                checkValues(element, path + "/" + index++);
            }
        } else if (node.isString()) {
            checkNul(node.stringValue(), path);
        } else if (node.isBigInteger()) {
            BigInteger value = node.bigIntegerValue();
            if (value.compareTo(LONG_MIN) < 0 || value.compareTo(LONG_MAX) > 0) {
                throw violation(path + ": integer " + abbreviate(value.toString()) + " is outside the signed 64-bit range");
            }
        }
    }

    private static void checkNul(String text, String path) throws PoisonRecordException {
        if (text.indexOf('\0') >= 0) {
            throw violation(path + ": a string contains U+0000");
        }
    }

    /**
     * A date or timestamp the schema's pattern accepted must exist on the calendar (no 2026-02-30, 25:00,
     * +24:00, year 0) and, with an offset, its UTC time must lie in the years 1..9999 — Python's
     * {@code datetime} range, which the Python consumers parse these fields into.
     */
    private static void checkTimestamp(String name, JsonNode node) throws PoisonRecordException {
        if (node == null || !node.isString()) {
            return;
        }
        String text = node.stringValue();
        Matcher timestamp = TIMESTAMP.matcher(text);
        Matcher date = DATE.matcher(text);
        try {
            if (timestamp.matches()) {
                LocalDateTime local = LocalDateTime.of(number(timestamp, 1), number(timestamp, 2), number(timestamp, 3),
                        number(timestamp, 4), number(timestamp, 5), number(timestamp, 6));
                int offsetSeconds = 0;
                if (timestamp.group(7) != null) {
                    int hours = number(timestamp, 7);
                    int minutes = number(timestamp, 8);
                    if (hours > 23 || minutes > 59) {
                        throw new DateTimeException("offset out of range");
                    }
                    int sign = text.charAt(timestamp.start(7) - 1) == '-' ? -1 : 1;
                    offsetSeconds = sign * (hours * 3600 + minutes * 60);
                }
                int utcYear = local.minusSeconds(offsetSeconds).getYear();
                if (local.getYear() < 1 || utcYear < 1 || utcYear > 9999) {
                    throw new DateTimeException("outside the years 1..9999 in UTC");
                }
            } else if (date.matches() && number(date, 1) >= 1) {
                LocalDate.of(number(date, 1), number(date, 2), number(date, 3));
            } else if (date.matches()) {
                throw new DateTimeException("year 0");
            }
            // anything else is not a date the pattern admits: the schema has said what it had to
        } catch (DateTimeException e) {
            throw violation(name + ": " + abbreviate(text) + " is not a real date/time (" + e.getMessage() + ")");
        }
    }

    private static int number(Matcher matcher, int group) {
        return Integer.parseInt(matcher.group(group));
    }

    private static PoisonRecordException violation(String message) {
        return new PoisonRecordException(PoisonRecordException.SCHEMA_VIOLATION, message);
    }

    private static String abbreviate(String text) {
        return text.length() <= 80 ? text : text.substring(0, 77) + "...";
    }
}
