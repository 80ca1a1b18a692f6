package devicecontroller

import "encoding/json"

// The content shapes of KubeEdge's DeviceTwin messages (spec §7.2, §14.2). Field names and omitempty rules are the
// protocol: edges decode them with their own structs.

type baseMessage struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
}

// edgeDevice is one entry of a membership list. The device ID is the bare name, as in v1.7.
type edgeDevice struct {
	ID          string              `json:"id,omitempty"`
	Name        string              `json:"name,omitempty"`
	Description string              `json:"description,omitempty"`
	Twin        map[string]*msgTwin `json:"twin,omitempty"`
}

// membershipUpdate is sent on node/{node}/membership. Both lists are always present (possibly empty), which
// non-Go edges parse more easily than null.
type membershipUpdate struct {
	baseMessage
	AddedDevices   []edgeDevice `json:"added_devices"`
	RemovedDevices []edgeDevice `json:"removed_devices"`
}

// membershipDetail is sent on node/{node}/membership/detail: the complete device list of the node, which the edge
// applies as a replacement (devices it has and the list lacks are removed).
type membershipDetail struct {
	baseMessage
	Devices []edgeDevice `json:"devices"`
}

// twinUpdate is the content of twin/cloud_updated (cloud → edge) and twin/edge_updated (edge → cloud).
type twinUpdate struct {
	baseMessage
	Twin map[string]*msgTwin `json:"twin"`
}

type msgTwin struct {
	Expected        *twinValue    `json:"expected,omitempty"`
	Actual          *twinValue    `json:"actual,omitempty"`
	Optional        *bool         `json:"optional,omitempty"`
	Metadata        *typeMetadata `json:"metadata,omitempty"`
	ExpectedVersion *twinVersion  `json:"expected_version,omitempty"`
	ActualVersion   *twinVersion  `json:"actual_version,omitempty"`
}

type twinValue struct {
	// Value is a pointer because JSON null ("delete if optional") differs from "".
	Value    *string        `json:"value,omitempty"`
	Metadata *valueMetadata `json:"metadata,omitempty"`
}

type valueMetadata struct {
	Timestamp int64 `json:"timestamp,omitempty"`
}

type typeMetadata struct {
	Type string `json:"type,omitempty"`
}

type twinVersion struct {
	Cloud int64 `json:"cloud"`
	Edge  int64 `json:"edge"`
}

// deviceStateUpdate is the content of device/{id}/state/update. Edges have sent the state at the top level
// (v1.7, as the mapper published it) and inside "device" (later releases); both are read.
type deviceStateUpdate struct {
	baseMessage
	State      string `json:"state"`
	LastOnline string `json:"last_online"`
	Device     *struct {
		State          string `json:"state"`
		LastOnlineTime string `json:"lastOnlineTime"`
	} `json:"device"`
}

func (u deviceStateUpdate) state() (state, lastOnline string) {
	state, lastOnline = u.State, u.LastOnline
	if u.Device != nil {
		if u.Device.State != "" {
			state = u.Device.State
		}
		if u.Device.LastOnlineTime != "" {
			lastOnline = u.Device.LastOnlineTime
		}
	}
	return state, lastOnline
}

// Twin value types the edge accepts (§14.2); anything else fails its validation.
const (
	typeString  = "string"
	typeInt     = "int"
	typeFloat   = "float"
	typeBoolean = "boolean"
	typeDeleted = "deleted"
)

// replyError is the content of an error answer to the edge. It is a Go error on the bus because CloudHub sends
// responses carrying an error without waiting for an ACK (KubeEdge's rule); on the wire it is the error text.
type replyError struct{ err error }

func (e replyError) Error() string { return e.err.Error() }
func (e replyError) Unwrap() error { return e.err }

func (e replyError) MarshalJSON() ([]byte, error) { return json.Marshal(e.err.Error()) }
