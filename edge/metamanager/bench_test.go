package metamanager_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/tether-edge/tether/pkg/beehive"
	"github.com/tether-edge/tether/pkg/beehive/model"
	"github.com/tether-edge/tether/pkg/modules"
)

// ackCounter is a hub that signals every ACK it receives.
type ackCounter struct {
	bus  *beehive.Bus
	acks chan struct{}
}

func (a *ackCounter) Name() string  { return modules.EdgeHub }
func (a *ackCounter) Group() string { return modules.EdgeHubGroup }
func (a *ackCounter) Enable() bool  { return true }
func (a *ackCounter) Start(ctx context.Context) error {
	for {
		msg, err := a.bus.Receive(ctx, modules.EdgeHub)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, beehive.ErrStopped) {
				return nil
			}
			return err
		}
		if msg.Router.Operation == model.ResponseOperation {
			a.acks <- struct{}{}
		}
	}
}

// BenchmarkCloudInsertAck measures a pod insert from the cloud through to
// its ACK (SQLite commit included). "serial" is CloudHub's ACK queue, one
// message in flight per node; "pipelined" bounds what MetaManager can do.
func BenchmarkCloudInsertAck(b *testing.B) {
	for _, window := range []int{1, 256} {
		name := "serial"
		if window > 1 {
			name = fmt.Sprintf("pipelined-%d", window)
		}
		b.Run(name, func(b *testing.B) {
			h := newHarness(b, harnessOpts{noHub: true, discard: true, registerExtra: func(bus *beehive.Bus) beehive.Module {
				return &ackCounter{bus: bus, acks: make(chan struct{}, window)}
			}})
			acks := h.extra.(*ackCounter).acks
			msgs := make([]model.Message, 64)
			for i := range msgs {
				name := fmt.Sprintf("pod-%d", i)
				msgs[i] = *model.NewMessage("").BuildRouter(modules.EdgeController, model.GroupResource,
					"default/pod/"+name, model.UpdateOperation).FillBody(podJSON(name, "uid-"+name, "1"))
			}
			inFlight := 0
			b.ResetTimer()
			for i := range b.N {
				if inFlight == window {
					<-acks
					inFlight--
				}
				m := msgs[i%len(msgs)]
				m.Header.ID = fmt.Sprintf("m-%d", i)
				if err := h.bus.Send(h.ctx, modules.MetaManager, m); err != nil {
					b.Fatal(err)
				}
				inFlight++
			}
			for ; inFlight > 0; inFlight-- {
				<-acks
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
