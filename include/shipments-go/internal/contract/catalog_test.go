package contract

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadCatalog(t *testing.T) *Catalog {
	t.Helper()
	cat, err := Load(filepath.Join("..", "..", "..", "topics.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func shipmentValue(t *testing.T, mutate func(*Envelope, *ShipmentPayload)) []byte {
	t.Helper()
	env := Envelope{EventID: "0b3c6a52-1d2e-5f00-8a1b-2c3d4e5f6a7b", EventType: "shipment_picked", SchemaVersion: 1,
		EventTime: FormatTime(time.Date(2026, 11, 25, 10, 0, 0, 123e6, time.UTC)), Source: "shipment-tracker", TraceID: "O-1"}
	p := ShipmentPayload{ShipmentID: "S-0011223344556677", OrderID: "O-1", Status: "picked", Carrier: "DHL"}
	if mutate != nil {
		mutate(&env, &p)
	}
	value, err := Encode(env, p)
	if err != nil {
		t.Fatal(err)
	}
	return value
}

func TestShipmentsSchemaAcceptsAGoodEvent(t *testing.T) {
	v, err := loadCatalog(t).Validator("shipments")
	if err != nil {
		t.Fatal(err)
	}
	value := shipmentValue(t, nil)
	if !strings.Contains(string(value), `"event_time":"2026-11-25T10:00:00.123Z"`) {
		t.Fatalf("event_time format: %s", value)
	}
	if err := v.Validate(value); err != nil {
		t.Fatalf("good event rejected: %v", err)
	}
}

func TestShipmentsSchemaRejectsBadEvents(t *testing.T) {
	v, err := loadCatalog(t).Validator("shipments")
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*Envelope, *ShipmentPayload){
		"event type of another topic": func(e *Envelope, _ *ShipmentPayload) { e.EventType = "order_placed" },
		"unknown status":              func(_ *Envelope, p *ShipmentPayload) { p.Status = "lost" },
		"missing shipment id":         func(_ *Envelope, p *ShipmentPayload) { p.ShipmentID = "" },
		"not a uuid":                  func(e *Envelope, _ *ShipmentPayload) { e.EventID = "S-1/picked" },
		"schema version 2":            func(e *Envelope, _ *ShipmentPayload) { e.SchemaVersion = 2 },
		"order id too long":           func(_ *Envelope, p *ShipmentPayload) { p.OrderID = strings.Repeat("x", 65) },
	}
	for name, mutate := range cases {
		if err := v.Validate(shipmentValue(t, mutate)); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error should be one line: %q", name, err)
		}
	}
	extra := strings.Replace(string(shipmentValue(t, nil)), `"carrier":"DHL"`, `"carrier":"DHL","eta":"soon"`, 1)
	if err := v.Validate([]byte(extra)); err == nil {
		t.Errorf("extra payload field accepted (additionalProperties: false)")
	}
}

func TestPaymentsSchemaAndDecode(t *testing.T) {
	v, err := loadCatalog(t).Validator("payments")
	if err != nil {
		t.Fatal(err)
	}
	value := []byte(`{"event_id":"0b3c6a52-1d2e-4f00-8a1b-2c3d4e5f6a7b","event_type":"payment_authorized","schema_version":1,` +
		`"event_time":"2026-11-25T10:00:00+01:00","source":"payments","payload":{"payment_id":"P-1","order_id":"O-1",` +
		`"amount":12.5,"currency":"EUR","status":"authorized","method":"card"}}`)
	if err := v.Validate(value); err != nil {
		t.Fatalf("good payment rejected: %v", err)
	}
	codec, err := loadCatalog(t).Codec("payments")
	if err != nil {
		t.Fatal(err)
	}
	env, err := codec.Decode([]byte("O-1"), value)
	if err != nil || env["payload"].(map[string]any)["order_id"] != "O-1" || env["event_type"] != "payment_authorized" {
		t.Fatalf("decode: %+v %v", env, err)
	}
	at, err := ParseTime(env["event_time"].(string))
	if err != nil || !at.Equal(time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)) {
		t.Fatalf("parse time: %v %v", at, err)
	}
	if err := v.Validate([]byte(`{"event_type":"payment_authorized"}`)); err == nil {
		t.Fatalf("incomplete payment accepted")
	}
}

func TestUnknownTopicAndMissingFile(t *testing.T) {
	if _, err := loadCatalog(t).Validator("nope"); err == nil {
		t.Fatalf("unknown topic accepted")
	}
	if _, err := Load("does/not/exist.yaml"); err == nil || !strings.Contains(err.Error(), "MBYN_CATALOG") {
		t.Fatalf("missing file error should name MBYN_CATALOG: %v", err)
	}
}
