package fetcher

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// TestResultMetrics: a finished download counts under its result, in downloads_total and
// download_duration_seconds (their children are looked up once, when the metrics are made).
func TestResultMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	tf := newTestFetcher(t, func(c *Config) { c.Registerer = reg })
	start := tf.clk.Now()
	tf.terminalKind(outcome{sha256: "x"}, nil, start)
	tf.terminalKind(outcome{sha256: "y"}, nil, start)
	tf.terminalKind(outcome{}, transient(pb.FailureReason_FAILURE_REASON_TIMEOUT, "slow"), start)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			if len(s.GetLabel()) != 1 || s.GetLabel()[0].GetName() != "result" {
				continue
			}
			v := s.GetCounter().GetValue()
			if h := s.GetHistogram(); h != nil {
				v = float64(h.GetSampleCount())
			}
			got[mf.GetName()+"/"+s.GetLabel()[0].GetValue()] = v
		}
	}
	want := map[string]float64{
		"paperfetch_fetcher_downloads_total/completed":           2,
		"paperfetch_fetcher_downloads_total/failed":              1,
		"paperfetch_fetcher_download_duration_seconds/completed": 2,
		"paperfetch_fetcher_download_duration_seconds/failed":    1,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}
