package edged

import (
	"context"
	"errors"
	"sync"

	"k8s.io/klog/v2"

	"github.com/tether-edge/tether/pkg/beehive"
)

// link is edged's view of whether the cloud answers. EdgeHub's connect events go to other groups, so edged
// learns from its own requests: an answer from the cloud (even a refusal) means up, MetaManager's "not
// connected" or a timeout means down. Only the node agent keeps probing while down (one status patch per
// interval); pod status patches and deletes wait and are flushed when the link comes back.
type link struct {
	mu     sync.Mutex
	online bool
	// back fires once per down→up transition, for the pod manager to flush what it held.
	back chan struct{}
}

func newLink() *link {
	// Down until proven otherwise: the first registration attempt decides, so an offline start sends
	// nothing but that probe.
	return &link{back: make(chan struct{}, 1)}
}

func (l *link) up() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.online
}

// observe records what a request's outcome says about the link.
func (l *link) observe(err error) {
	if errors.Is(err, context.Canceled) || errors.Is(err, beehive.ErrStopped) {
		// Shutting down says nothing about the cloud.
		return
	}
	if err != nil && errors.Is(err, errUnreachable) {
		l.set(false, err)
		return
	}
	l.set(true, nil)
}

func (l *link) connected()    { l.set(true, nil) }
func (l *link) disconnected() { l.set(false, errors.New("edgehub reported cloud_disconnected")) }

func (l *link) set(online bool, cause error) {
	l.mu.Lock()
	changed := l.online != online
	l.online = online
	l.mu.Unlock()
	if !changed {
		return
	}
	if online {
		klog.InfoS("Cloud reachable; sending held pod updates")
		select {
		case l.back <- struct{}{}:
		default:
		}
		return
	}
	klog.InfoS("Cloud unreachable; holding pod status updates and deletions until it is back", "cause", cause)
}
