package dev.mbyn.payments;

import java.math.BigDecimal;
import tools.jackson.core.JacksonException;
import tools.jackson.databind.JsonNode;
import tools.jackson.databind.ObjectMapper;

/**
 * The fields of an {@code order_placed} event the payments service needs.
 *
 * <p>{@code traceId} is the order's {@code trace_id}, or its {@code event_id} when it has none; payments
 * carry it on so one trace follows a purchase across topics.
 */
record Order(String orderId, BigDecimal amount, String currency, String traceId) {

    /** An orders record that is not a usable order event (poison, wrong type, missing fields). */
    static final class UnusableOrderException extends Exception {
        private static final long serialVersionUID = 1L;

        UnusableOrderException(String message) {
            super(message);
        }
    }

    /** Parse an orders record value; the checks are the ones a payment needs, not the full contract. */
    static Order decode(ObjectMapper mapper, byte[] value) throws UnusableOrderException {
        if (value == null) {
            throw new UnusableOrderException("value is null");
        }
        JsonNode envelope;
        try {
            envelope = mapper.readTree(value);
        } catch (JacksonException e) {
            throw new UnusableOrderException("value is not JSON: " + e.getOriginalMessage());
        }
        if (!"order_placed".equals(envelope.path("event_type").stringValue(null))) {
            throw new UnusableOrderException("event_type is not order_placed");
        }
        JsonNode payload = envelope.path("payload");
        String orderId = payload.path("order_id").stringValue(null);
        String currency = payload.path("currency").stringValue(null);
        JsonNode amount = payload.path("amount");
        if (orderId == null || orderId.isEmpty() || currency == null || !amount.isNumber()) {
            throw new UnusableOrderException("payload needs order_id, currency and a numeric amount");
        }
        String trace = envelope.path("trace_id").stringValue(null);
        if (trace == null || trace.isEmpty()) {
            trace = envelope.path("event_id").stringValue(orderId);
        }
        return new Order(orderId, amount.decimalValue(), currency, trace);
    }
}
