package contract

import (
	"encoding/json"
	"fmt"
)

// Envelope is the JSON object every message value is (field order as in the catalog).
type Envelope struct {
	EventID       string          `json:"event_id"`
	EventType     string          `json:"event_type"`
	SchemaVersion int             `json:"schema_version"`
	EventTime     string          `json:"event_time"`
	Source        string          `json:"source"`
	TraceID       string          `json:"trace_id,omitempty"`
	Payload       json.RawMessage `json:"payload"`
}

// ShipmentPayload is the payload of every shipments event.
type ShipmentPayload struct {
	ShipmentID string `json:"shipment_id"`
	OrderID    string `json:"order_id"`
	Status     string `json:"status"`
	Carrier    string `json:"carrier"`
}

// Encode builds the envelope around payload and returns its JSON bytes.
func Encode(env Envelope, payload any) ([]byte, error) {
	raw, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	env.Payload = raw
	return json.Marshal(env)
}
