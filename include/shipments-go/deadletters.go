package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"mbyn/shipments-go/internal/contract"
	"mbyn/shipments-go/internal/tracker"
)

// Limits of the dlq.error_message and dlq.traceback headers, in characters (mbyn.contracts.dead_letters).
const (
	maxErrorMessage = 2000
	maxTraceback    = 4000
)

// DeadLetters sends the input records the tracker cannot read to the dead-letters topic, as the
// dead-letter contract says (mbyn.contracts.dead_letters): the original key, value and headers (minus
// any dlq.* header) plus dlq.reason, dlq.error_class, dlq.error_message, dlq.traceback, dlq.topic,
// dlq.partition, dlq.offset, dlq.timestamp and dlq.consumer_group. Produce is asynchronous; the
// positions of acknowledged dead letters are collected for Acked, which the consumer drains (under its
// own lock) before it computes offsets — so no offset moves past a record before its dead letter is
// stored. Counters are safe to read any time.
type DeadLetters struct {
	cl    *kgo.Client
	topic string
	group string
	log   *Logger

	sent, delivered, failed atomic.Int64
	mu                      sync.Mutex
	acked                   []tracker.Position
	lastErr                 error
	failLog                 Every
}

func NewDeadLetters(cl *kgo.Client, topic, group string, log *Logger) *DeadLetters {
	return &DeadLetters{cl: cl, topic: topic, group: group, log: log, failLog: Every{interval: 10 * time.Second}}
}

// Send enqueues the dead letter of r; the reason is the *contract.PoisonError's, else unexpected_error.
func (d *DeadLetters) Send(r *kgo.Record, err error) {
	pos := tracker.Position{Partition: r.Partition, Offset: r.Offset}
	record := &kgo.Record{Topic: d.topic, Key: r.Key, Value: r.Value,
		Headers: deadLetterHeaders(r, err, d.group, callers(2))}
	d.sent.Add(1)
	d.cl.Produce(context.Background(), record, func(_ *kgo.Record, err error) { d.onDelivery(pos, err) })
}

func (d *DeadLetters) onDelivery(pos tracker.Position, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		d.delivered.Add(1)
		d.acked = append(d.acked, pos)
		return
	}
	d.failed.Add(1)
	d.lastErr = err
	if ok, skipped := d.failLog.Allow(time.Now()); ok {
		d.log.Errorf("dead letter of %d@%d not delivered to %s: %v (%d similar lines skipped)",
			pos.Partition, pos.Offset, d.topic, err, skipped)
	}
}

// Acked returns, and forgets, the input positions whose dead letters were acknowledged since the last call.
func (d *DeadLetters) Acked() []tracker.Position {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := d.acked
	d.acked = nil
	return out
}

// LastError is the most recent delivery error (nil if none).
func (d *DeadLetters) LastError() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lastErr
}

// deadLetterHeaders are r's headers without any dlq.* one, followed by the contract's dlq.* headers.
// The original timestamp is empty when the record has none (a negative timestamp).
func deadLetterHeaders(r *kgo.Record, err error, group, stack string) []kgo.RecordHeader {
	if err == nil {
		err = errors.New("no error given")
	}
	reason := contract.ReasonUnexpectedError
	trace := stack
	var pe *contract.PoisonError
	if errors.As(err, &pe) {
		reason = pe.Reason
		trace = pe.Where + "\n" + stack
	}
	timestamp := ""
	if ms := r.Timestamp.UnixMilli(); !r.Timestamp.IsZero() && ms >= 0 {
		timestamp = strconv.FormatInt(ms, 10)
	}
	headers := make([]kgo.RecordHeader, 0, len(r.Headers)+9)
	for _, h := range r.Headers {
		if !strings.HasPrefix(h.Key, "dlq.") {
			// A name that is not UTF-8 would make the whole record's headers unreadable to confluent-kafka
			// (the dead-letters sink): its invalid bytes become U+FFFD, as Java's client decodes them.
			h.Key = strings.ToValidUTF8(h.Key, "\uFFFD")
			headers = append(headers, h)
		}
	}
	for _, kv := range [][2]string{
		{"dlq.reason", reason},
		{"dlq.error_class", fmt.Sprintf("%T", err)},
		{"dlq.error_message", contract.Shorten(err.Error(), maxErrorMessage)},
		{"dlq.traceback", contract.Shorten(trace, maxTraceback)},
		{"dlq.topic", r.Topic},
		{"dlq.partition", strconv.FormatInt(int64(r.Partition), 10)},
		{"dlq.offset", strconv.FormatInt(r.Offset, 10)},
		{"dlq.timestamp", timestamp},
		{"dlq.consumer_group", group},
	} {
		headers = append(headers, kgo.RecordHeader{Key: kv[0], Value: []byte(kv[1])})
	}
	return headers
}

// callers is a short stack of the caller's caller and up (function, file:line), for dlq.traceback.
func callers(skip int) string {
	pcs := make([]uintptr, 8)
	n := runtime.Callers(skip+2, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	var b strings.Builder
	for {
		f, more := frames.Next()
		if f.Function != "" {
			fmt.Fprintf(&b, "%s\n\t%s:%d\n", f.Function, f.File, f.Line)
		}
		if !more {
			break
		}
	}
	return strings.TrimRight(b.String(), "\n")
}
