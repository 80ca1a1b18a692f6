package eventbus

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

// builtinFilters are always subscribed. Device IDs are one segment (the
// device name, KubeEdge v1.7) or two ({namespace}/{name}, v1.17 and later);
// mappers of both generations are served.
var builtinFilters = []string{
	"$hw/events/upload/#",
	"$hw/events/device/+/state/update",
	"$hw/events/device/+/+/state/update",
	"$hw/events/device/+/twin/+",
	"$hw/events/device/+/+/twin/+",
	"$hw/events/node/+/membership/get",
	"SYS/dis/upload_records",
	"+/user/#",
}

// BuiltinFilters returns the topic filters the event bus always subscribes to.
func BuiltinFilters() []string {
	return append([]string(nil), builtinFilters...)
}

func isBuiltin(filter string) bool {
	for _, f := range builtinFilters {
		if f == filter {
			return true
		}
	}
	return false
}

// Topic prefixes whose messages belong to DeviceTwin.
const (
	deviceTopicPrefix = "$hw/events/device/"
	nodeTopicPrefix   = "$hw/events/node/"
)

// maxTopicLen is MQTT's limit: topics are length-prefixed with 16 bits.
const maxTopicLen = 65535

var (
	errEmptyTopic    = errors.New("empty topic")
	errTopicTooLong  = errors.New("topic longer than 65535 bytes")
	errTopicEncoding = errors.New("topic is not valid UTF-8 or contains NUL")
	errTopicWildcard = errors.New("topic name contains a wildcard")
	errFilterSyntax  = errors.New("'#' must be the last level and '+'/'#' must fill a whole level")
)

// validTopicName checks a topic to publish to. A broker disconnects a client
// that publishes to an invalid topic, so it is checked before it gets near
// a connection.
func validTopicName(t string) error {
	if err := validTopicString(t); err != nil {
		return err
	}
	if strings.ContainsAny(t, "+#") {
		return errTopicWildcard
	}
	return nil
}

// validTopicFilter checks a filter to subscribe to; an invalid one would be
// refused by the broker on every reconnect once persisted.
func validTopicFilter(f string) error {
	if err := validTopicString(f); err != nil {
		return err
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return errFilterSyntax
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return errFilterSyntax
		}
	}
	return nil
}

func validTopicString(t string) error {
	switch {
	case t == "":
		return errEmptyTopic
	case len(t) > maxTopicLen:
		return errTopicTooLong
	case !utf8.ValidString(t) || strings.ContainsRune(t, 0):
		return errTopicEncoding
	}
	return nil
}

// isTwinTopic says whether a received topic is DeviceTwin's rather than the
// cloud's.
func isTwinTopic(topic string) bool {
	return strings.HasPrefix(topic, deviceTopicPrefix) || strings.HasPrefix(topic, nodeTopicPrefix)
}

// TopicResource is how the topic of an MQTT message travels to DeviceTwin:
// base64 with the URL alphabet, padded, so '/' and '$' survive resource parsing.
func TopicResource(topic string) string {
	return base64.URLEncoding.EncodeToString([]byte(topic))
}

// ResourceTopic reverses TopicResource.
func ResourceTopic(resource string) (string, error) {
	b, err := base64.URLEncoding.DecodeString(resource)
	if err != nil {
		return "", fmt.Errorf("decode topic from resource %q: %w", resource, err)
	}
	return string(b), nil
}

// Route builds the bus message for an MQTT message received on topic and
// names the group it goes to: device and node topics to DeviceTwin (topic
// base64-encoded in the resource), everything else to the cloud (topic in
// clear).
func Route(topic, payload string) (group string, msg *model.Message) {
	msg = model.NewMessage("").FillBody(payload)
	if isTwinTopic(topic) {
		msg.BuildRouter(modules.BusGroup, model.GroupUser, TopicResource(topic), model.ResponseOperation)
		return modules.TwinGroup, msg
	}
	msg.BuildRouter(modules.BusGroup, model.GroupUser, topic, model.UploadOperation)
	return modules.EdgeHubGroup, msg
}
