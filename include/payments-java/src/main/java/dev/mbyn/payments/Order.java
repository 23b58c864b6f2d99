package dev.mbyn.payments;

import java.math.BigDecimal;
import tools.jackson.databind.JsonNode;

/**
 * The fields of an {@code order_placed} event the payments service needs.
 *
 * <p>{@code traceId} is the order's {@code trace_id}, or its {@code event_id} when it has none; payments
 * carry it on so one trace follows a purchase across topics.
 */
record Order(String orderId, BigDecimal amount, String currency, String traceId) {

    /**
     * The order in an {@code orders} value that {@link RecordCodec} accepted (so it has the catalog's shape:
     * {@code event_type} order_placed, a payload with order id, currency and amount).
     */
    static Order of(JsonNode envelope) {
        JsonNode payload = envelope.path("payload");
        String orderId = payload.path("order_id").stringValue("");
        String trace = envelope.path("trace_id").stringValue(null);
        if (trace == null || trace.isEmpty()) {
            trace = envelope.path("event_id").stringValue(orderId);
        }
        return new Order(orderId, payload.path("amount").decimalValue(), payload.path("currency").stringValue(""), trace);
    }
}
