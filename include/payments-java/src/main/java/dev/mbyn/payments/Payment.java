package dev.mbyn.payments;

import java.math.BigDecimal;

/**
 * One payment event to send: what goes into the envelope, the record key and header, and when.
 *
 * @param kind       why this payment exists (drives the counters)
 * @param delayMs    0 = send now; otherwise hold it this long (a late payment)
 * @param copies     1, or 2 for a duplicate: the same event (same event_id, same bytes) sent twice
 */
record Payment(
        Kind kind,
        String eventId,
        String eventType,
        String traceId,
        String paymentId,
        String orderId,
        BigDecimal amount,
        String currency,
        String status,
        String method,
        long delayMs,
        int copies) {

    enum Kind {
        AUTHORIZED,
        DECLINED,
        MISMATCHED,
        ORPHAN
    }

    /** The record key: the order id, so a payment lands in the same partition slot as its order. */
    String key() {
        return orderId;
    }

    /** The same payment, due now. */
    Payment withoutDelay() {
        return new Payment(kind, eventId, eventType, traceId, paymentId, orderId, amount, currency, status, method,
                0, copies);
    }
}
