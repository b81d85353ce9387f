//go:build unix

package grpcserver

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// BenchmarkUnaryCall measures a unary client call through the coordinator's server as the
// binary builds it (metrics, call logs as JSON lines to a file at info, validation, no rate
// limit as in bench/run's B6) over loopback TCP, 8 callers on 2 connections like B6's ghz:
// GetBatch of the fake coordinator, and the health check (not logged) as the floor.
func BenchmarkUnaryCall(b *testing.B) {
	f, err := os.Create(filepath.Join(b.TempDir(), "coordinator.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	logger := slog.New(slog.NewJSONHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ts := startServerLogged(b, logger, roleCoordinator, "--rate-limit", "0")
	conns := []*grpc.ClientConn{dial(b, ts.addr), dial(b, ts.addr)}
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		call func(i int) error
	}{
		{"GetBatch", func(i int) error {
			_, err := pb.NewCoordinatorServiceClient(conns[i%2]).GetBatch(ctx, &pb.GetBatchRequest{BatchId: "20261201T104123Z-07ac09e060"})
			return err
		}},
		{"HealthCheck", func(i int) error {
			_, err := healthpb.NewHealthClient(conns[i%2]).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetParallelism(4) // 8 callers on 2 cores
			var next atomic.Int64
			cpu0 := cpuTime(b)
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1))
				for pb.Next() {
					if err := bc.call(i); err != nil {
						b.Error(err)
						return
					}
				}
			})
			// CPU time of the process (server and client) per call: less sensitive than the
			// wall time to the other tenants of a shared machine.
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}

// cpuTime returns the user and system CPU time the process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
