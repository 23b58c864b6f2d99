package dev.mbyn.payments;

import java.math.BigDecimal;
import java.math.RoundingMode;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;

/**
 * Decides, deterministically from the order id alone, which payment events an order gets.
 *
 * <p>The mix, per 10,000 orders (independent draws from a SHA-256 of the order id):
 * <ul>
 *   <li>~90% authorized with the order's amount and currency;</li>
 *   <li>~5% declined (same amount, status declined);</li>
 *   <li>~2% authorized with a wrong amount (an amount mismatch for fraud detection);</li>
 *   <li>~3% authorized but late: held {@link #MIN_DELAY_MS}..{@link #MAX_DELAY_MS} ms before sending;</li>
 *   <li>~1% sent twice (same event id) on top of the above;</li>
 *   <li>~1% also produce a payment for an order id that does not exist (a payment without order).</li>
 * </ul>
 * Event ids and payment ids are name-based UUIDs ({@link UUID#nameUUIDFromBytes}) of the order id, so a
 * re-run after a crash re-sends identical ids and consumers de-duplicate them. Only {@code event_time}
 * (wall clock at sending) differs between runs.
 */
final class PaymentPlanner {
    static final long MIN_DELAY_MS = 2_000;
    static final long MAX_DELAY_MS = 5_000;
    private static final String[] METHODS = {"card", "paypal", "bank_transfer", "voucher"};
    private static final int[] METHOD_WEIGHTS = {70, 15, 10, 5};

    private PaymentPlanner() {
    }

    static List<Payment> plan(Order order) {
        byte[] h = sha256("mbyn-payments:" + order.orderId());
        int mix = draw(h, 0);
        boolean duplicate = draw(h, 4) < 100;
        boolean orphan = draw(h, 8) < 100;
        String method = method(draw(h, 12));
        List<Payment> out = new ArrayList<>(2);

        Payment.Kind kind;
        String status = "authorized";
        BigDecimal amount = order.amount();
        long delay = 0;
        if (mix < 500) {
            kind = Payment.Kind.DECLINED;
            status = "declined";
        } else if (mix < 700) {
            kind = Payment.Kind.MISMATCHED;
            amount = wrongAmount(order.amount(), draw(h, 16));
        } else {
            kind = Payment.Kind.AUTHORIZED;
            if (mix < 1000) {
                delay = MIN_DELAY_MS + draw(h, 20) % (MAX_DELAY_MS - MIN_DELAY_MS + 1);
            }
        }
        out.add(new Payment(kind, uuid("payment-event:" + order.orderId()),
                "declined".equals(status) ? "payment_declined" : "payment_authorized", order.traceId(),
                "PAY-" + uuid("payment-id:" + order.orderId()), order.orderId(), amount, order.currency(), status,
                method, delay, duplicate ? 2 : 1));

        if (orphan) {
            // An order id that never appears on the orders topic, but shaped like the generator's ids.
            String ghost = "O-" + uuid("ghost-order:" + order.orderId()).substring(0, 18);
            String eventId = uuid("payment-event:" + ghost);
            out.add(new Payment(Payment.Kind.ORPHAN, eventId, "payment_authorized", eventId,
                    "PAY-" + uuid("payment-id:" + ghost), ghost, order.amount(), order.currency(), "authorized",
                    method, 0, 1));
        }
        return out;
    }

    /** A different, plausible amount: 10..59% off the order's amount, up or down. */
    static BigDecimal wrongAmount(BigDecimal amount, int draw) {
        BigDecimal factor = BigDecimal.valueOf(110 + draw % 50, 2);
        BigDecimal wrong = (draw % 2 == 0 ? amount.multiply(factor) : amount.divide(factor, 2, RoundingMode.HALF_UP))
                .setScale(2, RoundingMode.HALF_UP);
        if (wrong.compareTo(amount) == 0) {
            wrong = amount.add(BigDecimal.ONE);  // tiny amounts (0.01) round back to themselves
        }
        return wrong;
    }

    private static String method(int draw) {
        int point = draw % 100;
        for (int i = 0; i < METHODS.length; i++) {
            point -= METHOD_WEIGHTS[i];
            if (point < 0) {
                return METHODS[i];
            }
        }
        return METHODS[0];
    }

    /** A uniform draw in 0..9,999 from four bytes of the digest starting at {@code offset}. */
    private static int draw(byte[] digest, int offset) {
        int value = ((digest[offset] & 0xff) << 24) | ((digest[offset + 1] & 0xff) << 16)
                | ((digest[offset + 2] & 0xff) << 8) | (digest[offset + 3] & 0xff);
        return (int) Long.remainderUnsigned(Integer.toUnsignedLong(value), 10_000);
    }

    static String uuid(String name) {
        return UUID.nameUUIDFromBytes(name.getBytes(StandardCharsets.UTF_8)).toString();
    }

    private static byte[] sha256(String text) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(text.getBytes(StandardCharsets.UTF_8));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every Java runtime has SHA-256", e);
        }
    }
}
