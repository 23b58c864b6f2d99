package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"mbyn/shipments-go/internal/contract"
	"mbyn/shipments-go/internal/tracker"
)

// errStartup marks failures before any record was read or sent (exit code 2, no summary line).
var errStartup = errors.New("start-up failed")

// producerOpts are the producer settings of every client: idempotent (franz-go's default, which also
// implies acks=all — set explicitly here for the reader), lz4, 20 ms linger, and a delivery timeout so
// that a broker gone for good fails records (counted as "failed") instead of hanging the flush.
// In the secured mode every client authenticates with SASL/SCRAM-SHA-512 as cfg.SASLUser — the same
// settings as the Python clients' mbyn.kafka.clients.client_config.
func producerOpts(cfg Config) []kgo.Opt {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Bootstrap...),
		kgo.ClientID("mbyn-" + Source),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()),
		kgo.ProducerLinger(20 * time.Millisecond),
		kgo.RecordDeliveryTimeout(2 * time.Minute),
		kgo.DialTimeout(5 * time.Second),
	}
	if cfg.SASLUser != "" {
		opts = append(opts, kgo.SASL(scram.Auth{User: cfg.SASLUser, Pass: cfg.SASLPassword}.AsSha512Mechanism()))
	}
	return opts
}

// waitForBroker pings until a broker answers, with exponential back-off (0.5 s doubling to 15 s) and
// one log line per failed attempt; gives up after maxWait or when the run is stopped.
func waitForBroker(cl *kgo.Client, cfg Config, stop *Stopper, log *Logger, maxWait time.Duration) error {
	deadline := time.Now().Add(maxWait)
	delay := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(stop.Context(), 5*time.Second)
		err := cl.Ping(ctx)
		cancel()
		if err == nil {
			if attempt > 1 {
				log.Infof("broker %s is reachable now", joinHosts(cfg.Bootstrap))
			}
			return nil
		}
		if stop.Stopped() {
			return nil
		}
		if errors.Is(err, kerr.SaslAuthenticationFailed) {
			// Retrying cannot fix credentials: stop at once and say which settings to check.
			return fmt.Errorf("%w: the broker at %s refused the credentials of MBYN_KAFKA_USERNAME=%s (wrong MBYN_KAFKA_PASSWORD, unknown user, or MBYN_SECURITY does not match the cluster): %v",
				errStartup, joinHosts(cfg.Bootstrap), cfg.SASLUser, err)
		}
		if time.Now().Add(delay).After(deadline) {
			return fmt.Errorf("%w: no Kafka broker at %s after %.0fs (start one with `mbyn kafka up` or set MBYN_BOOTSTRAP_SERVERS)",
				errStartup, joinHosts(cfg.Bootstrap), maxWait.Seconds())
		}
		log.Warnf("broker %s unreachable (attempt %d: %v), retrying in %.1fs", joinHosts(cfg.Bootstrap), attempt, err, delay.Seconds())
		stop.Sleep(time.Now().Add(delay))
		delay = min(2*delay, 15*time.Second)
	}
}

func joinHosts(hosts []string) string {
	out := ""
	for i, h := range hosts {
		if i > 0 {
			out += ","
		}
		out += h
	}
	return out
}

// Emitter turns tracker events into validated envelopes on the shipments topic and counts them.
// Produce is asynchronous; Flush waits for every acknowledgement. Counters are safe to read any time.
type Emitter struct {
	cl            *kgo.Client
	topic         string
	validator     *contract.Validator
	schemaVersion int
	log           *Logger

	sent, delivered, failed, invalid atomic.Int64
	errMu                            sync.Mutex
	lastErr                          error
	failLog                          Every
}

func NewEmitter(cl *kgo.Client, topic string, cat *contract.Catalog, validator *contract.Validator, log *Logger) *Emitter {
	return &Emitter{cl: cl, topic: topic, validator: validator, schemaVersion: cat.SchemaVersion, log: log,
		failLog: Every{interval: 10 * time.Second}}
}

// Emit validates and enqueues events; an invalid one is counted and logged, never sent.
func (e *Emitter) Emit(events []tracker.Event) {
	for _, ev := range events {
		e.emit(ev)
	}
}

func (e *Emitter) emit(ev tracker.Event) {
	value, err := contract.Encode(contract.Envelope{
		EventID:       ev.EventID,
		EventType:     ev.Stage.EventType(),
		SchemaVersion: e.schemaVersion,
		EventTime:     contract.FormatTime(ev.EventTime),
		Source:        Source,
		TraceID:       ev.TraceID,
	}, contract.ShipmentPayload{ShipmentID: ev.ShipmentID, OrderID: ev.OrderID, Status: ev.Stage.Status(), Carrier: ev.Carrier})
	if err == nil {
		err = e.validator.Validate(value)
	}
	if err != nil {
		e.invalid.Add(1)
		e.log.Warnf("invalid record not sent: %v", err)
		return
	}
	record := &kgo.Record{
		Topic: e.topic,
		Key:   []byte(ev.ShipmentID),
		Value: value,
		Headers: []kgo.RecordHeader{
			{Key: "source", Value: []byte(Source)},
			{Key: "trace_id", Value: []byte(ev.TraceID)},
		},
	}
	e.sent.Add(1)
	e.cl.Produce(context.Background(), record, e.onDelivery)
}

func (e *Emitter) onDelivery(_ *kgo.Record, err error) {
	if err == nil {
		e.delivered.Add(1)
		return
	}
	e.failed.Add(1)
	e.errMu.Lock()
	defer e.errMu.Unlock()
	e.lastErr = err
	if ok, skipped := e.failLog.Allow(time.Now()); ok {
		e.log.Errorf("delivery to %s failed: %v (%d similar lines skipped)", e.topic, err, skipped)
	}
}

// Flush waits up to timeout for every enqueued record to be acknowledged or failed.
func (e *Emitter) Flush(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := e.cl.Flush(ctx); err != nil {
		return fmt.Errorf("flush to %s: %w", e.topic, err)
	}
	return nil
}

// LastError is the most recent delivery error (nil if none).
func (e *Emitter) LastError() error {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	return e.lastErr
}

// Fill copies the counters into the summary.
func (e *Emitter) Fill(s *Summary) {
	s.Sent, s.Delivered, s.Failed, s.Invalid = e.sent.Load(), e.delivered.Load(), e.failed.Load(), e.invalid.Load()
}

// Line is the counters for progress lines.
func (e *Emitter) Line() string {
	return fmt.Sprintf("sent=%d delivered=%d failed=%d invalid=%d", e.sent.Load(), e.delivered.Load(), e.failed.Load(), e.invalid.Load())
}

// Pacer is a token bucket of rate events per second (rate 0: unlimited) that never blocks:
// callers ask how many events are allowed now and when the next one will be.
type Pacer struct {
	rate  float64
	start time.Time
	taken float64
}

func NewPacer(rate float64, now time.Time) *Pacer { return &Pacer{rate: rate, start: now} }

// Allowed is how many events may happen at now (a large number when unlimited).
func (p *Pacer) Allowed(now time.Time) int {
	if p.rate <= 0 {
		return 1 << 30
	}
	n := int(p.rate*now.Sub(p.start).Seconds() - p.taken + 1)
	return max(n, 0)
}

// Take records n events.
func (p *Pacer) Take(n int) { p.taken += float64(n) }

// Next is when the next event is allowed.
func (p *Pacer) Next() time.Time {
	if p.rate <= 0 {
		return time.Time{}
	}
	return p.start.Add(time.Duration(p.taken / p.rate * float64(time.Second)))
}
