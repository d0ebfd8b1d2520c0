package forward

import (
	"context"
	"sync"
	"testing"
)

// BenchmarkForward measures what forwarding costs the receiver: a copy and
// an enqueue. A goroutine empties the queue as senders would, without the
// network.
func BenchmarkForward(b *testing.B) {
	for _, tt := range []struct {
		name  string
		spans int
		drain bool
	}{
		{"queued/50_spans", 50, true},
		{"queued/500_spans", 500, true},
		{"queue_full/50_spans", 50, false},
	} {
		b.Run(tt.name, func(b *testing.B) {
			cfg := testConfig(ProtocolGRPC, "127.0.0.1:1")
			f, err := New(cfg, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			body := encode(b, traces(1, tt.spans, 0), Protobuf)
			if !tt.drain {
				for f.Forward(body, Protobuf, tt.spans) {
				}
			}
			stop := make(chan struct{})
			var drainer sync.WaitGroup
			if tt.drain {
				drainer.Go(func() {
					for {
						select {
						case <-f.queue.wake:
							for r := f.queue.take(); r != nil; r = f.queue.take() {
								f.queue.done(r)
								r.free()
							}
						case <-stop:
							return
						}
					}
				})
			}
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			dropped := 0
			for b.Loop() {
				if !f.Forward(body, Protobuf, tt.spans) {
					dropped++
				}
			}
			b.StopTimer()
			close(stop)
			drainer.Wait()
			b.ReportMetric(float64(dropped)/float64(b.N), "drops/op")
			ctx, cancel := context.WithCancel(context.Background())
			cancel() // nothing to flush to: drop the rest at once
			_ = f.Shutdown(ctx)
		})
	}
}
