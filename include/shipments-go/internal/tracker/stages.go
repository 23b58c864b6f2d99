// Package tracker is the shipment state machine of the shipment tracker, free of any Kafka code: the
// stages a shipment walks through, deterministic ids, a bounded timer queue of pending stages, the
// per-partition offset bookkeeping that decides how far the input may be committed, and an LRU of the
// orders already seen.
package tracker

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"

	"github.com/google/uuid"
)

// Stage is one status of a shipment, in the order they happen.
type Stage int

const (
	Created Stage = iota
	Picked
	InTransit
	Delivered
)

// Stages lists every stage in order.
var Stages = []Stage{Created, Picked, InTransit, Delivered}

var stageStatus = [...]string{"created", "picked", "in_transit", "delivered"}

// Status is the payload's status field ("in_transit").
func (s Stage) Status() string { return stageStatus[s] }

// EventType is the envelope's event_type ("shipment_in_transit").
func (s Stage) EventType() string { return "shipment_" + stageStatus[s] }

// Final says whether no stage follows.
func (s Stage) Final() bool { return s == Delivered }

// Carriers a shipment can be handed to; the choice is a function of the order id.
var Carriers = []string{"DHL", "UPS", "DPD", "GLS", "FedEx", "PostNL"}

// eventNamespace is the UUID v5 namespace of shipment event ids (a fixed random UUID: changing it
// would change every id and defeat de-duplication downstream).
var eventNamespace = uuid.MustParse("6b1f9c52-3c0e-4d7a-9a51-2f0c8e7d4b19")

func orderDigest(orderID string) [32]byte {
	return sha256.Sum256([]byte("mbyn-shipment:" + orderID))
}

// ShipmentID derives the shipment id from the order id: "S-" and 16 hex digits of a SHA-256, so the
// same order always gets the same shipment (replays, restarts, several tracker copies).
func ShipmentID(orderID string) string {
	d := orderDigest(orderID)
	return "S-" + hex.EncodeToString(d[:8])
}

// CarrierFor picks the carrier of an order's shipment, deterministically.
func CarrierFor(orderID string) string {
	d := orderDigest(orderID)
	return Carriers[binary.BigEndian.Uint32(d[8:12])%uint32(len(Carriers))]
}

// EventID is the UUID v5 of shipment id and status: a re-sent stage carries the id it had the first time.
func EventID(shipmentID string, stage Stage) string {
	return uuid.NewSHA1(eventNamespace, []byte(shipmentID+"/"+stage.Status())).String()
}
