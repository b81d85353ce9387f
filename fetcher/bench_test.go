package fetcher

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// benchOrigin returns the origin benchmarks download from: $FETCHER_BENCH_ORIGIN (serving
// /big and /small/{i}, to compare with curl against the same server) or an in-process one.
func benchOrigin(b *testing.B, bigSize int) string {
	b.Helper()
	if u := os.Getenv("FETCHER_BENCH_ORIGIN"); u != "" {
		return u
	}
	big := pdfBody(bigSize, 77)
	mux := http.NewServeMux()
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		_, _ = w.Write(big)
	})
	mux.HandleFunc("/small/{i}", func(w http.ResponseWriter, r *http.Request) {
		i, _ := strconv.Atoi(r.PathValue("i"))
		off := (i * 65536) % (len(big) - 65536)
		body := append([]byte("%PDF-1.7\n"), big[off+9:off+65536]...)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	srv := httptest.NewServer(mux)
	b.Cleanup(srv.Close)
	return srv.URL
}

func benchFetcher(b *testing.B) *testFetcher {
	return newTestFetcherTB(b, nil)
}

// BenchmarkLargeFile downloads one large PDF (64 MiB in-process; 512 MiB from
// $FETCHER_BENCH_ORIGIN) into a file:// bucket.
func BenchmarkLargeFile(b *testing.B) {
	origin := benchOrigin(b, 64<<20)
	tf := benchFetcher(b)
	b.ResetTimer()
	var size int64
	for b.Loop() {
		out, fail := tf.dl.download(b.Context(), job{url: origin + "/big", maxSize: 1 << 30, timeout: time.Hour, stall: time.Minute, store: true}, nopReporter{})
		if fail != nil {
			b.Fatal(fail)
		}
		size = out.size
	}
	b.SetBytes(size)
}

// BenchmarkSmallFiles downloads 2,000 distinct 64 KiB PDFs, 16 at a time.
func BenchmarkSmallFiles(b *testing.B) {
	origin := benchOrigin(b, 16<<20)
	tf := benchFetcher(b)
	const n, conc = 2000, 16
	b.ResetTimer()
	for b.Loop() {
		var wg sync.WaitGroup
		next := make(chan int)
		errs := make(chan error, conc)
		for range conc {
			wg.Go(func() {
				for i := range next {
					if _, fail := tf.dl.download(b.Context(), job{url: fmt.Sprintf("%s/small/%d", origin, i), maxSize: 1 << 30, timeout: time.Hour, stall: time.Minute, store: true, resume: true}, nopReporter{}); fail != nil {
						errs <- fail
						return
					}
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.SetBytes(n * 65536)
}
