package main

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"mbyn/shipments-go/internal/contract"
)

func headerMap(t *testing.T, hs []kgo.RecordHeader) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, h := range hs {
		if _, dup := m[h.Key]; dup {
			t.Fatalf("header %s twice", h.Key)
		}
		m[h.Key] = string(h.Value)
	}
	return m
}

func TestDeadLetterHeadersFollowTheContract(t *testing.T) {
	cat, err := contract.Load("../topics.yaml")
	if err != nil {
		t.Fatal(err)
	}
	payments, err := cat.Codec("payments")
	if err != nil {
		t.Fatal(err)
	}
	_, decodeErr := payments.Decode([]byte("O-1"), []byte(`{"schema_version":2}`))
	r := &kgo.Record{Topic: "t1-payments", Partition: 4, Offset: 1234, Key: []byte("O-1"),
		Timestamp: time.UnixMilli(1764064800123),
		Headers: []kgo.RecordHeader{{Key: "source", Value: []byte("kcat")}, {Key: "dlq.reason", Value: []byte("forged")},
			{Key: "trace_id", Value: nil}}}
	hs := deadLetterHeaders(r, decodeErr, "t1-shipment-tracker", callers(0))
	if hs[0].Key != "source" || hs[1].Key != "trace_id" || hs[1].Value != nil {
		t.Fatalf("original headers must come first, unchanged, without dlq.*: %v", hs[:2])
	}
	m := headerMap(t, hs)
	want := map[string]string{"dlq.reason": "unknown_schema_version", "dlq.error_class": "*contract.PoisonError",
		"dlq.topic": "t1-payments", "dlq.partition": "4", "dlq.offset": "1234", "dlq.timestamp": "1764064800123",
		"dlq.consumer_group": "t1-shipment-tracker", "source": "kcat"}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %q, want %q", k, m[k], v)
		}
	}
	if !strings.Contains(m["dlq.error_message"], "schema_version 2") || !strings.Contains(m["dlq.traceback"], "Decode") ||
		!strings.Contains(m["dlq.traceback"], "deadletters_test.go") {
		t.Errorf("message %q / traceback %q", m["dlq.error_message"], m["dlq.traceback"])
	}
	if len(hs) != 2+9 {
		t.Errorf("%d headers, want the 2 kept ones and 9 dlq.* ones", len(hs))
	}
}

func TestDeadLetterHeadersOfAnyError(t *testing.T) {
	long := strings.Repeat("ü", 5000) + "\xff"
	hs := headerMap(t, deadLetterHeaders(&kgo.Record{Topic: "payments", Offset: 0}, errors.New(long), "g", strings.Repeat("x", 9000)))
	if hs["dlq.reason"] != "unexpected_error" || hs["dlq.error_class"] != "*errors.errorString" || hs["dlq.timestamp"] != "" {
		t.Errorf("headers %v", hs["dlq.reason"])
	}
	msg, trace := hs["dlq.error_message"], hs["dlq.traceback"]
	if utf8.RuneCountInString(msg) != 2000 || !strings.HasSuffix(msg, "…") || !utf8.ValidString(msg) {
		t.Errorf("error message not cut to 2000 characters of UTF-8: %d", utf8.RuneCountInString(msg))
	}
	if utf8.RuneCountInString(trace) != 4000 {
		t.Errorf("traceback not cut to 4000 characters: %d", utf8.RuneCountInString(trace))
	}
}

func TestDeadLettersMayBeAsLargeAsTheCatalogAllows(t *testing.T) {
	cat, err := contract.Load("../topics.yaml")
	if err != nil {
		t.Fatal(err)
	}
	limit, ok := cat.MaxMessageBytes("dead-letters")
	if !ok || limit < 2<<20 {
		t.Fatalf("dead-letters should take a 1 MiB record plus headers: max.message.bytes %d %v", limit, ok)
	}
	fn := batchMaxBytes(cat, "t1-dead-letters")
	if fn("t1-dead-letters") != limit || fn("t1-shipments") != defaultBatchMaxBytes || fn("") != defaultBatchMaxBytes {
		t.Fatalf("batch limits %d %d %d", fn("t1-dead-letters"), fn("t1-shipments"), fn(""))
	}
	if _, ok := cat.MaxMessageBytes("payments"); ok {
		t.Fatalf("payments sets no max.message.bytes in the catalog")
	}
}
