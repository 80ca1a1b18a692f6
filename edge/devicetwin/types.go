package devicetwin

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// The wire model of KubeEdge's dttype package: these JSON shapes travel on
// MQTT topics and in cloud messages, so every key and omitempty is protocol.

// BaseMessage starts every twin payload.
type BaseMessage struct {
	EventID   string `json:"event_id"`
	Timestamp int64  `json:"timestamp"`
}

// TwinValue is an expected or actual value.
type TwinValue struct {
	Value    *string        `json:"value,omitempty"`
	Metadata *ValueMetadata `json:"metadata,omitempty"`
}

// ValueMetadata says when a value was set (Unix ms, edge clock).
type ValueMetadata struct {
	Timestamp int64 `json:"timestamp,omitempty"`
}

// TypeMetadata carries a twin's value type.
type TypeMetadata struct {
	Type string `json:"type,omitempty"`
}

// TwinVersion orders updates: cloud counts cloud-side changes (the
// Device's resourceVersion), edge counts local ones.
type TwinVersion struct {
	CloudVersion int64 `json:"cloud"`
	EdgeVersion  int64 `json:"edge"`
}

// MsgTwin is one twin property as exchanged with apps and the cloud.
type MsgTwin struct {
	Expected        *TwinValue    `json:"expected,omitempty"`
	Actual          *TwinValue    `json:"actual,omitempty"`
	Optional        *bool         `json:"optional,omitempty"`
	Metadata        *TypeMetadata `json:"metadata,omitempty"`
	ExpectedVersion *TwinVersion  `json:"expected_version,omitempty"`
	ActualVersion   *TwinVersion  `json:"actual_version,omitempty"`
}

// TwinDoc is one property of a /twin/update/document: nil Last means the
// twin is new, nil Current that it was deleted.
type TwinDoc struct {
	Last    *MsgTwin `json:"last"`
	Current *MsgTwin `json:"current"`
}

// DeviceTwinUpdate is the payload of /twin/update, /twin/update/result,
// /twin/get/result, twin/cloud_updated and twin/edge_updated. A JSON null
// twin in an update deletes an optional twin.
type DeviceTwinUpdate struct {
	BaseMessage
	Twin map[string]*MsgTwin `json:"twin"`
}

// DeviceTwinDocument is the payload of /twin/update/document.
type DeviceTwinDocument struct {
	BaseMessage
	Twin map[string]*TwinDoc `json:"twin"`
}

// DeviceTwinDelta is the payload of /twin/update/delta: every live twin,
// and the expected values the device has not reached yet.
type DeviceTwinDelta struct {
	BaseMessage
	Twin  map[string]*MsgTwin `json:"twin"`
	Delta map[string]string   `json:"delta"`
}

// ErrorResult answers a request that failed.
type ErrorResult struct {
	BaseMessage
	Code   int    `json:"code"`
	Reason string `json:"reason"`
}

// MsgAttr is a device attribute.
type MsgAttr struct {
	Value    string        `json:"value"`
	Optional *bool         `json:"optional,omitempty"`
	Metadata *TypeMetadata `json:"metadata,omitempty"`
}

// Device is a device in membership messages.
type Device struct {
	ID          string              `json:"id,omitempty"`
	Name        string              `json:"name,omitempty"`
	Description string              `json:"description,omitempty"`
	State       string              `json:"state,omitempty"`
	LastOnline  string              `json:"last_online,omitempty"`
	Attributes  map[string]*MsgAttr `json:"attributes,omitempty"`
	Twin        map[string]*MsgTwin `json:"twin,omitempty"`
}

// MembershipUpdate is the cloud's membership message and the payload of
// $hw/events/node/{node}/membership/updated.
type MembershipUpdate struct {
	BaseMessage
	AddDevices    []Device `json:"added_devices"`
	RemoveDevices []Device `json:"removed_devices"`
}

// MembershipGetResult is the payload of /membership/get/result.
type MembershipGetResult struct {
	BaseMessage
	Devices []Device `json:"devices"`
}

// DeviceStateUpdate is the payload of /state/update.
type DeviceStateUpdate struct {
	BaseMessage
	State string `json:"state"`
}

// DeviceState is the device part of a state result.
type DeviceState struct {
	Name       string `json:"name"`
	State      string `json:"state"`
	LastOnline string `json:"lastOnlineTime"`
}

// DeviceStateResult is the payload of /state/update/result and the content
// of device/{id}/state/update sent to the cloud.
type DeviceStateResult struct {
	BaseMessage
	Device DeviceState `json:"device"`
}

// Twin value types (metadata.type). TypeDeleted marks a deleted twin.
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
	case "", TypeString, TypeInt, TypeInteger, TypeFloat, TypeDouble, TypeBoolean, TypeBytes:
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
	case "", TypeString, TypeBytes:
	case TypeInt, TypeInteger:
		_, err = strconv.ParseInt(v, 10, 64)
	case TypeFloat, TypeDouble:
		_, err = strconv.ParseFloat(v, 64)
	case TypeBoolean:
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
