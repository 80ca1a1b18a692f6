package devicetwin

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// BenchmarkTwinReport measures mapper reports through DeviceTwin on a real SQLite file: each one is parsed,
// checked, committed (twin row and outbox row in one transaction) and answered on twin/update/result, which is
// what the benchmark waits for. "serial" waits for each answer, so each report is a durable commit of its own;
// "burst-32" is a mapper publishing 32 reports without waiting, as MQTT mappers do, so they share commits (see
// run.batch). The payload is the counter mapper's, with both of its properties (≈ 150 bytes).
func BenchmarkTwinReport(b *testing.B) {
	for _, burst := range []int{1, 32} {
		name := "serial"
		if burst > 1 {
			name = fmt.Sprintf("burst-%d", burst)
		}
		b.Run(name, func(b *testing.B) {
			h := withCounter(b, "", nil)
			result := counterTopic + "/twin/update/result"
			payloads := make([]string, 1024)
			for i := range payloads {
				payloads[i] = `{"event_id":"","timestamp":` + strconv.FormatInt(time.Now().UnixMilli(), 10) +
					`,"twin":{"count":{"actual":{"value":"` + strconv.Itoa(i) + `"},"metadata":{"type":"int"}},` +
					`"status":{"actual":{"value":"ON"},"metadata":{"type":"string"}}}}`
			}
			n := 0
			for b.Loop() {
				for range burst {
					h.mqtt(counterTopic+"/twin/update", payloads[n%len(payloads)])
					n++
				}
				for got := 0; got < burst; {
					select {
					case msg := <-h.eventbus.got:
						// The document and the delta follow each answer; only answers count.
						if msg.Router.Resource == result {
							got++
						}
					case <-time.After(waitTimeout):
						b.Fatalf("no answer to report %d", n)
					}
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "reports/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/report")
		})
	}
}
