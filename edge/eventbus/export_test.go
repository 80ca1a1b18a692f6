package eventbus

import "time"

// SetReconnectBackoff shortens the first reconnect delay, so that broker
// restarts in tests do not wait for the production backoff.
func SetReconnectBackoff(e *EventBus, d time.Duration) { e.minBackoff = d }
