package devicecontroller

import (
	"encoding/json"

	"github.com/tether-edge/tether/pkg/twin"
)

// stateReport is the content of device/{id}/state/update as edges have sent it: inside "device" (the
// twin.DeviceStateResult later releases and our edge send) or at the top level (v1.7, which forwarded the mapper's
// /state/update payload). Only the cloud reads the legacy keys, so they stay out of pkg/twin.
type stateReport struct {
	twin.DeviceStateResult
	State      string `json:"state"`
	LastOnline string `json:"last_online"`
}

func (r stateReport) state() (state, lastOnline string) {
	state, lastOnline = r.State, r.LastOnline
	if r.Device.State != "" {
		state = r.Device.State
	}
	if r.Device.LastOnline != "" {
		lastOnline = r.Device.LastOnline
	}
	return state, lastOnline
}

// replyError is the content of an error answer to the edge. It is a Go error on the bus because CloudHub sends
// responses carrying an error without waiting for an ACK (KubeEdge's rule); on the wire it is the error text.
type replyError struct{ err error }

func (e replyError) Error() string { return e.err.Error() }
func (e replyError) Unwrap() error { return e.err }

func (e replyError) MarshalJSON() ([]byte, error) { return json.Marshal(e.err.Error()) }
