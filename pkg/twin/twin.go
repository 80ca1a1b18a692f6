// Package twin holds the JSON messages of KubeEdge's device twin protocol
// (spec §14.2, with the v1.7 cloud side in §7.2), shared by cloudcore's
// DeviceController, edgecore's DeviceTwin and tests. They live in one place
// because each side decodes what the other encodes: a key or omitempty that
// drifts between two copies breaks KubeEdge peers silently, so every tag
// here is protocol and the golden files in testdata pin the encoding.
//
// Names follow KubeEdge's dttype package so its sources stay easy to compare,
// without the stutter: dttype.TwinValue is Value, dttype.TwinVersion is
// Version. Shapes that only edge apps see over MQTT (documents, deltas, error
// results) stay in edge/devicetwin.
package twin

// BaseMessage starts every twin payload.
type BaseMessage struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
}

// Value is an expected or actual value.
type Value struct {
	// Value is a pointer because JSON null ("delete if optional", from edge
	// apps) differs from "".
	Value    *string        `json:"value,omitempty"`
	Metadata *ValueMetadata `json:"metadata,omitempty"`
}

// ValueMetadata says when a value was set (Unix ms).
type ValueMetadata struct {
	Timestamp int64 `json:"timestamp,omitempty"`
}

// TypeMetadata carries a twin's or attribute's value type, one of the Type
// constants.
type TypeMetadata struct {
	Type string `json:"type,omitempty"`
}

// Version orders updates of one side of a twin. CloudVersion is the Device's
// resourceVersion when the cloud set the value; EdgeVersion counts local
// changes. Both are always encoded: a zero is a version, not an absence.
type Version struct {
	CloudVersion int64 `json:"cloud"`
	EdgeVersion  int64 `json:"edge"`
}

// MsgTwin is one twin property. Everything is optional because updates carry
// only what changed; versions travel between cloud and edge only.
type MsgTwin struct {
	Expected        *Value        `json:"expected,omitempty"`
	Actual          *Value        `json:"actual,omitempty"`
	Optional        *bool         `json:"optional,omitempty"`
	Metadata        *TypeMetadata `json:"metadata,omitempty"`
	ExpectedVersion *Version      `json:"expected_version,omitempty"`
	ActualVersion   *Version      `json:"actual_version,omitempty"`
}

// MsgAttr is a device attribute.
type MsgAttr struct {
	Value    string        `json:"value"`
	Optional *bool         `json:"optional,omitempty"`
	Metadata *TypeMetadata `json:"metadata,omitempty"`
}

// Device is one entry of a membership list. v1.7 IDs are the bare device
// name. The cloud sends only identity and twins; state, last_online and
// attributes are filled by the edge when it republishes membership to apps,
// and omitempty keeps them off the cloud's messages.
type Device struct {
	ID          string              `json:"id,omitempty"`
	Name        string              `json:"name,omitempty"`
	Description string              `json:"description,omitempty"`
	State       string              `json:"state,omitempty"`
	LastOnline  string              `json:"last_online,omitempty"`
	Attributes  map[string]*MsgAttr `json:"attributes,omitempty"`
	Twin        map[string]*MsgTwin `json:"twin,omitempty"`
}

// MembershipUpdate is the content of node/{node}/membership (cloud → edge)
// and the payload of $hw/events/node/{node}/membership/updated. The lists
// have no omitempty: senders make them empty rather than nil, because non-Go
// edges and apps parse [] more easily than null or a missing key.
type MembershipUpdate struct {
	BaseMessage
	AddedDevices   []Device `json:"added_devices"`
	RemovedDevices []Device `json:"removed_devices"`
}

// MembershipDetail is a node's complete device list: the content of
// node/{node}/membership/detail, which KubeEdge edges apply as a replacement,
// and the payload of $hw/events/node/{node}/membership/get/result.
type MembershipDetail struct {
	BaseMessage
	Devices []Device `json:"devices"`
}

// DeviceTwinUpdate is the content of twin/cloud_updated (cloud → edge) and
// twin/edge_updated (edge → cloud), and the payload of the MQTT twin
// requests and results. A JSON null twin, only meaningful from edge apps,
// deletes an optional twin.
type DeviceTwinUpdate struct {
	BaseMessage
	Twin map[string]*MsgTwin `json:"twin"`
}

// DeviceState is the device part of a state report.
type DeviceState struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	LastOnline string `json:"lastOnlineTime"`
}

// DeviceStateResult is the content of device/{id}/state/update (edge →
// cloud) and the payload of /state/update/result. Device is a value because
// the edge always sends it; decoders that must accept v1.7 reports, which
// lack it, see a zero DeviceState.
type DeviceStateResult struct {
	BaseMessage
	Device DeviceState `json:"device"`
}

// Twin and attribute value types (metadata.type). KubeEdge edges accept
// string, int/integer, float and boolean (§14.2); a cloud talking to them
// must not send the others. TypeDeleted marks a deleted twin.
const (
	TypeString  = "string"
	TypeInt     = "int"
	TypeInteger = "integer"
	TypeFloat   = "float"
	TypeDouble  = "double"
	TypeBoolean = "boolean"
	TypeBytes   = "bytes"
	TypeDeleted = "deleted"
)
