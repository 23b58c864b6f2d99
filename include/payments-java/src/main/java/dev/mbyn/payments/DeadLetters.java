package dev.mbyn.payments;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;

/**
 * The dead-letter record of a consumed record this service gave up on, per mbyn's dead-letter contract
 * (the same as {@code mbyn.contracts.dead_letters.build_headers}).
 *
 * <p>Key and value are the original bytes (null stays null); the headers are the original ones except
 * any named {@code dlq.*}, followed by {@code dlq.reason}, {@code dlq.error_class},
 * {@code dlq.error_message} (at most {@value #MAX_MESSAGE} characters), {@code dlq.traceback} (at most
 * {@value #MAX_TRACEBACK}), {@code dlq.topic} (physical), {@code dlq.partition}, {@code dlq.offset},
 * {@code dlq.timestamp} (ms since the epoch, empty when the record has none) and
 * {@code dlq.consumer_group}, all UTF-8 text.
 */
final class DeadLetters {
    static final String PREFIX = "dlq.";
    static final int MAX_MESSAGE = 2000;
    static final int MAX_TRACEBACK = 4000;
    /** Stack frames per exception in {@code dlq.traceback}: where it was raised, not the whole call chain. */
    private static final int FRAMES = 8;
    private static final int MAX_CAUSES = 4;

    private DeadLetters() {
    }

    /** The dead letter for {@code record} on the physical topic {@code deadLettersTopic}. */
    static ProducerRecord<byte[], byte[]> of(ConsumerRecord<byte[], byte[]> record, PoisonRecordException error,
            String deadLettersTopic, String consumerGroup) {
        RecordHeaders headers = new RecordHeaders();
        for (Header header : record.headers()) {
            if (!header.key().startsWith(PREFIX)) {
                headers.add(header.key(), header.value());
            }
        }
        boolean hasTimestamp = record.timestampType() != TimestampType.NO_TIMESTAMP_TYPE && record.timestamp() >= 0;
        add(headers, "reason", error.reason());
        add(headers, "error_class", errorClass(error));
        add(headers, "error_message", cut(String.valueOf(error.getMessage()), MAX_MESSAGE));
        add(headers, "traceback", cut(traceback(error), MAX_TRACEBACK));
        add(headers, "topic", record.topic());
        add(headers, "partition", Integer.toString(record.partition()));
        add(headers, "offset", Long.toString(record.offset()));
        add(headers, "timestamp", hasTimestamp ? Long.toString(record.timestamp()) : "");
        add(headers, "consumer_group", consumerGroup);
        return new ProducerRecord<>(deadLettersTopic, null, record.key(), record.value(), headers);
    }

    /** The class of what went wrong: the wrapped exception's for an unexpected error, else the poison exception's. */
    static String errorClass(PoisonRecordException error) {
        Throwable cause = error.getCause();
        if (PoisonRecordException.UNEXPECTED_ERROR.equals(error.reason()) && cause != null) {
            return cause.getClass().getName();
        }
        return error.getClass().getSimpleName();
    }

    private static void add(RecordHeaders headers, String name, String value) {
        // Strings from hostile input may hold lone surrogates: getBytes writes '?' for them, never invalid UTF-8.
        headers.add(PREFIX + name, value.getBytes(StandardCharsets.UTF_8));
    }

    /** At most {@code max} characters (code points), the last one "…" when cut. */
    static String cut(String text, int max) {
        if (text.codePointCount(0, text.length()) <= max) {
            return text;
        }
        return text.substring(0, text.offsetByCodePoints(0, max - 1)) + "…";
    }

    /** The exception and its causes, each with its first few stack frames. */
    static String traceback(Throwable error) {
        StringWriter out = new StringWriter();
        PrintWriter writer = new PrintWriter(out);
        String caused = "";
        Throwable e = error;
        for (int depth = 0; e != null && depth < MAX_CAUSES; depth++, e = e.getCause()) {
            writer.println(caused + e);
            StackTraceElement[] frames = e.getStackTrace();
            for (int i = 0; i < Math.min(FRAMES, frames.length); i++) {
                writer.println("\tat " + frames[i]);
            }
            if (frames.length > FRAMES) {
                writer.println("\t... " + (frames.length - FRAMES) + " more");
            }
            caused = "Caused by: ";
        }
        writer.flush();
        return out.toString();
    }
}
