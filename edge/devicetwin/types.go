package devicetwin

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/tether-edge/tether/pkg/twin"
)

// The MQTT-only payloads of KubeEdge's dttype package: only edge apps and
// mappers see them, so they stay here; what the cloud also reads or writes is
// in pkg/twin. Every key and omitempty is still protocol.

// TwinDoc is one property of a /twin/update/document: nil Last means the
// twin is new, nil Current that it was deleted.
type TwinDoc struct {
	Last    *twin.MsgTwin `json:"last"`
	Current *twin.MsgTwin `json:"current"`
}

// DeviceTwinDocument is the payload of /twin/update/document.
type DeviceTwinDocument struct {
	twin.BaseMessage
	Twin map[string]*TwinDoc `json:"twin"`
}

// DeviceTwinDelta is the payload of /twin/update/delta: every live twin,
// and the expected values the device has not reached yet.
type DeviceTwinDelta struct {
	twin.BaseMessage
	Twin  map[string]*twin.MsgTwin `json:"twin"`
	Delta map[string]string        `json:"delta"`
}

// ErrorResult answers a request that failed.
type ErrorResult struct {
	twin.BaseMessage
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// DeviceStateUpdate is the payload of /state/update. The edge answers with a
// twin.DeviceStateResult, which is also what the cloud gets.
type DeviceStateUpdate struct {
	twin.BaseMessage
	State string `json:"state"`
}

// Result codes of error payloads.
const (
	CodeBadRequest = 400
	CodeNotFound   = 404
	CodeInternal   = 500
)

// Device states accepted on /state/update; the first two count as online.
var deviceStates = map[string]bool{"online": true, "ok": true, "offline": false, "unknown": false, "unhealthy": false}

const (
	maxValueLen    = 512
	maxDeviceIDLen = 128
)

// twinKeyRE is KubeEdge's rule for twin and attribute names.
var twinKeyRE = regexp.MustCompile(`^[a-zA-Z0-9-_.,:/@#]{1,128}$`)

var (
	errBadName  = errors.New("invalid name")
	errBadValue = errors.New("invalid value")
	errBadType  = errors.New("unsupported type")
)

func validateKey(key string) error {
	if !twinKeyRE.MatchString(key) {
		return fmt.Errorf("%w %q: want 1-128 characters of [a-zA-Z0-9-_.,:/@#]", errBadName, key)
	}
	return nil
}

// validateDeviceID keeps ids usable as one MQTT topic level (or two, for
// {namespace}/{name}) and as a resource segment.
func validateDeviceID(id string) error {
	if id == "" || len(id) > maxDeviceIDLen {
		return fmt.Errorf("%w: device id %q: want 1-%d characters", errBadName, id, maxDeviceIDLen)
	}
	for _, seg := range strings.Split(id, "/") {
		if seg == "" {
			return fmt.Errorf("%w: device id %q has an empty segment", errBadName, id)
		}
	}
	if strings.ContainsAny(id, "+#$ \t\r\n\x00") {
		return fmt.Errorf("%w: device id %q contains an MQTT wildcard, '$' or whitespace", errBadName, id)
	}
	return nil
}

// knownType reports whether t is a value type a live twin may have; an
// empty type means string.
func knownType(t string) bool {
	switch t {
	case "", twin.TypeString, twin.TypeInt, twin.TypeInteger, twin.TypeFloat, twin.TypeDouble, twin.TypeBoolean, twin.TypeBytes:
		return true
	}
	return false
}

// validateValue checks v against type t. Values are never restricted to
// KubeEdge's key character set: spaces and JSON in string twins are common
// in mappers and harm nothing here.
func validateValue(t, v string) error {
	if len(v) > maxValueLen {
		return fmt.Errorf("%w: value of %d bytes exceeds %d", errBadValue, len(v), maxValueLen)
	}
	var err error
	switch t {
	case "", twin.TypeString, twin.TypeBytes:
	case twin.TypeInt, twin.TypeInteger:
		_, err = strconv.ParseInt(v, 10, 64)
	case twin.TypeFloat, twin.TypeDouble:
		_, err = strconv.ParseFloat(v, 64)
	case twin.TypeBoolean:
		_, err = strconv.ParseBool(v)
	default:
		return fmt.Errorf("%w %q", errBadType, t)
	}
	if err != nil {
		return fmt.Errorf("%w: %q is not a valid %s", errBadValue, v, t)
	}
	return nil
}

func ptr[T any](v T) *T { return &v }
