package dashboard_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

// screenshotEnv names the folder the browser test writes its screenshots to (the README shows
// docs/dashboard.png: PAPERFETCH_SCREENSHOTS=docs go test -run 'TestBrowser$' ./dashboard; a
// relative folder is taken from the module root).
const screenshotEnv = "PAPERFETCH_SCREENSHOTS"

// chromium finds the Debian chromium (scripts/test installs it); the test skips without it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH: the browser test is skipped (apt-get install -y chromium; scripts/test installs it)")
	return ""
}

// browserLog collects what the page must not produce: console errors, uncaught exceptions,
// error log entries (failed loads...) and JavaScript dialogs.
type browserLog struct {
	mu       sync.Mutex
	problems []string
	dialogs  chan string
}

func (l *browserLog) add(s string) {
	l.mu.Lock()
	l.problems = append(l.problems, s)
	l.mu.Unlock()
}

// take returns the problems so far and forgets them.
func (l *browserLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := l.problems
	l.problems = nil
	return p
}

func (l *browserLog) listen(ev any) {
	switch e := ev.(type) {
	case *cdpruntime.EventConsoleAPICalled:
		if e.Type == cdpruntime.ConsoleAPICalledTypeError || e.Type == cdpruntime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range e.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			l.add("console." + string(e.Type) + ": " + strings.Join(args, " "))
		}
	case *cdpruntime.EventExceptionThrown:
		l.add("exception: " + (&chromedp.ExceptionError{ExceptionDetails: e.ExceptionDetails}).Error())
	case *cdplog.EventEntryAdded:
		if e.Entry.Level == cdplog.EntryLevelError {
			l.add("log: " + e.Entry.Text + " " + e.Entry.URL)
		}
	case *page.EventJavascriptDialogOpening:
		l.add("dialog: " + e.Message)
		select {
		case l.dialogs <- e.Message:
		default:
		}
	}
}

// browser is a headless Chromium driven by chromedp, recording what the page must not produce.
type browser struct {
	t     *testing.T
	ctx   context.Context
	logs  *browserLog
	start time.Time
}

// newBrowser starts Chromium for the test; it is stopped in t.Cleanup.
func newBrowser(t *testing.T, chromePath string, start time.Time) *browser {
	t.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromePath), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck, chromedp.WindowSize(1400, 1100),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.UserDataDir(t.TempDir()))
	t.Cleanup(cancelAlloc)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelCtx)
	logs := &browserLog{dialogs: make(chan string, 8)}
	if err := chromedp.Listen(ctx, logs.listen); err != nil {
		t.Fatal(err)
	}
	go func() { // a dialog (alert from injected HTML) would block the page: record and close it
		for range logs.dialogs {
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	t.Cleanup(func() { close(logs.dialogs) })
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, cdpruntime.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	return &browser{t: t, ctx: ctx, logs: logs, start: start}
}

// step runs actions within 20 s or fails the test naming what.
func (b *browser) step(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	b.stepWithin(20*time.Second, what, actions...)
}

// stepWithin is step with another time limit.
func (b *browser) stepWithin(d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	sctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		b.t.Fatalf("%s: %v (after %s)", what, err, time.Since(b.start).Round(time.Millisecond))
	}
}

// screenshot writes a full-page PNG to $PAPERFETCH_SCREENSHOTS/name (a temporary folder
// without it).
func (b *browser) screenshot(name string) {
	b.t.Helper()
	dir := os.Getenv(screenshotEnv)
	switch {
	case dir == "":
		dir = b.t.TempDir()
	case !filepath.IsAbs(dir):
		dir = filepath.Join("..", dir) // the test runs in dashboard/
	}
	sctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// waitJS waits (15 s at most) until the JavaScript expression is truthy.
func waitJS(expr string) chromedp.Action[chromedp.Void] { return waitJSWithin(15*time.Second, expr) }

// waitJSWithin is waitJS with another time limit.
func waitJSWithin(d time.Duration, expr string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		deadline := time.Now().Add(d)
		for {
			_, err := chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(time.Until(deadline)))(ctx, tg)
			// A navigation can replace the page's JavaScript context under a poll: poll again
			// in the new one.
			if err != nil && strings.Contains(err.Error(), "Cannot find context with specified id") && time.Now().Before(deadline) {
				continue
			}
			if err != nil {
				return chromedp.Void{}, fmt.Errorf("waiting for %s: %w", expr, err)
			}
			return chromedp.Void{}, nil
		}
	}
}

// text is a JavaScript expression: the trimmed text of the first match of sel, or "".
func text(sel string) string {
	return fmt.Sprintf(`((document.querySelector(%q)||{}).textContent||'').trim()`, sel)
}

// TestBrowser loads the dashboard in headless Chromium and uses it as an operator would: the
// token is entered once; the overview shows batches, a paused host and the fetchers, live; a
// batch is cancelled with its button; a running batch's page follows it to completed without a
// reload; a failed paper is retried and succeeds; a paper id and an error made of HTML render
// as text; a paper's Download button fetches its PDF; the papers table pages and filters by
// state and by failure reason. Nothing logs an error to the console.
func TestBrowser(t *testing.T) {
	chromePath := chromium(t)
	start := time.Now()
	o := newOrigin(t)
	limited := httptest.NewServer(o.Config.Handler) // a second host, answering 429 under /limited/
	t.Cleanup(limited.Close)
	s := startStack(t)

	submit := func(id string, papers ...*pb.PaperSpec) {
		t.Helper()
		body, err := protojson.Marshal(&pb.SubmitBatchRequest{BatchId: id, Papers: papers})
		if err != nil {
			t.Fatal(err)
		}
		s.call(t, "POST", "/v1/batches", string(body), nil)
	}
	paper := func(id, url string) *pb.PaperSpec { return &pb.PaperSpec{PaperId: id, Urls: []string{url}} }
	many := []*pb.PaperSpec{paper(xssID, o.URL+"/ok/xss.pdf")}
	for i := range 120 {
		many = append(many, paper(fmt.Sprintf("arXiv:2401.%05d", i), fmt.Sprintf("%s/ok/%d.pdf", o.URL, i)))
	}
	submit("xss", many...)
	submit("flaky", paper("f1", o.URL+"/flaky/f1.pdf"), paper("f2", o.URL+"/ok/f2.pdf"))
	submit("tocancel", paper("c1", o.URL+"/slow/c1.pdf"), paper("c2", o.URL+"/slow/c2.pdf"))
	submit("running", paper("r1", o.URL+"/slow/r1.pdf"), paper("r2", o.URL+"/ok/r2.pdf"))
	submit("limited", paper("l1", limited.URL+"/limited/l1.pdf"))
	// HTML in a URL's query, quoted raw by the error of its failure (the origin refuses the
	// request line with 400).
	submit("htmlurls", paper("h1", o.URL+`/ok/?q="><img src=x onerror=alert(3)>`))
	for range 3 {
		<-o.slowCalls // both batches are running their slow downloads
	}
	if b := s.watchToEnd(t, "flaky"); b.GetCounts().GetFailed() != 1 {
		t.Fatalf("flaky: %v", b)
	}
	if b := s.watchToEnd(t, "limited"); b.GetCounts().GetFailed() != 1 {
		t.Fatalf("limited: %v", b)
	}
	// The host is paused for an hour now: a new paper on it waits.
	submit("waiting", paper("w1", limited.URL+"/limited/w1.pdf"))

	br := newBrowser(t, chromePath, start)
	ctx, step, screenshot, logs := br.ctx, br.step, br.screenshot, br.logs

	// Without a token the page says it needs one; once entered, the data appears.
	step("open the dashboard", chromedp.Navigate(s.url+"/"),
		waitJS(`document.getElementById('error').textContent.includes('bearer token')`))
	logs.take() // the 401s of the requests made before the token was entered
	step("enter the token", chromedp.SendKeys("#token", testToken), chromedp.Click("#token-form button[type=submit]"),
		waitJS(`document.querySelector('#batches tr[data-batch="running"]')`),
		waitJS(`sessionStorage.getItem('paperfetch.token') === `+fmt.Sprintf("%q", testToken)))

	// The paused host (Retry-After), the fetchers, the batches.
	limitedHost := strings.TrimPrefix(limited.URL, "http://")
	step("see the paused host", waitJS(fmt.Sprintf(`(%s).includes('paused') && (%s).includes('retry_after')`,
		text(`#hosts tr[data-host="`+limitedHost+`"] .paused-cell`), text(`#hosts tr[data-host="`+limitedHost+`"] .paused-cell`))))
	step("see the fetchers", waitJS(`document.querySelectorAll('#fetchers tr[data-fetcher]').length === 2`))
	step("see the failure chart", waitJS(`document.querySelectorAll('.uplot').length === 2`))

	// Cancel a batch with its button (two clicks: the first arms it).
	// The first click arms the button; it stays armed while live updates redraw the table.
	step("arm a batch's cancel button", chromedp.Click(`#batches tr[data-batch="tocancel"] button.cancel`),
		waitJS(text(`#batches tr[data-batch="tocancel"] button.cancel`)+` === 'Click again to cancel'`))
	submit("redraw", paper("d1", o.URL+"/ok/d1.pdf"))
	step("cancel the batch", waitJS(`document.querySelector('#batches tr[data-batch="redraw"]')`),
		waitJS(text(`#batches tr[data-batch="tocancel"] button.cancel`)+` === 'Click again to cancel'`),
		chromedp.Click(`#batches tr[data-batch="tocancel"] button.cancel`),
		waitJS(text(`#batches tr[data-batch="tocancel"] .state`)+` === 'cancelled'`))
	screenshot("dashboard.png")

	// A batch waiting on the paused host says so on its page.
	step("see why a batch waits", chromedp.Navigate(s.url+"/#/batch/waiting"),
		waitJS(text(`#batch-hosts tr[data-host="`+limitedHost+`"] .paused-cell`)+`.includes('paused')`),
		waitJS(text(`#batch-hosts tr[data-host="`+limitedHost+`"] .paused-cell`)+`.includes('retry_after')`),
		waitJS(text(`#batch-hosts tr[data-host="`+limitedHost+`"] td.remaining`)+` === '1'`),
		chromedp.Navigate(s.url+"/#/"), waitJS(`document.querySelector('#batches tr[data-batch="running"] a')`))

	// A running batch's page follows it to completed, live.
	step("open the running batch", chromedp.Click(`#batches tr[data-batch="running"] a`),
		waitJS(text(`#batch-state`)+` === 'running'`),
		waitJS(`document.querySelectorAll('#active tbody tr td.url').length === 1`))
	o.release()
	step("watch it complete", waitJS(text(`#batch-state`)+` === 'completed'`),
		waitJS(text(`#papers tr[data-paper="r1"] .paper-state`)+` === 'succeeded'`))

	// The HTML paper id renders as text; the 121 papers page by 100.
	step("open the big batch", chromedp.Navigate(s.url+"/#/batch/xss"),
		waitJS(text(`#batch-state`)+` === 'completed'`),
		waitJS(`document.querySelectorAll('#papers tbody tr[data-paper]').length === 100`))
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[
		document.querySelector('#papers tbody tr td.paper-id').textContent,
		String(document.querySelectorAll('#papers img, #papers script').length)]`))
	if err != nil || len(got) != 2 || got[0] != xssID || got[1] != "0" {
		t.Fatalf("the HTML paper id: %q %v", got, err)
	}
	// The first paper's Download button streams its PDF from the blob store.
	step("download a paper", chromedp.Click(`#papers tbody tr:first-child button.download`),
		waitJS(fmt.Sprintf(`performance.getEntriesByType('resource').some((e) => e.name.includes('/ui/download?batch=xss&paper=') && e.encodedBodySize === %d)`, len(pdf("/ok/xss.pdf")))),
		waitJS(`document.getElementById('error').hidden`))
	step("next page", chromedp.Click(`.pager button:nth-child(2)`),
		waitJS(`document.querySelectorAll('#papers tbody tr[data-paper]').length === 21`),
		chromedp.Click(`.pager button:nth-child(1)`),
		waitJS(`document.querySelectorAll('#papers tbody tr[data-paper]').length === 100`))
	step("filter by state", chromedp.SetValue(`#state-filter`, "PAPER_STATE_FAILED"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('state-filter').dispatchEvent(new Event('change'))`),
		waitJS(text(`#papers tbody td`)+` === 'No papers match.'`))

	step("open the batch with HTML in an error", chromedp.Navigate(s.url+"/#/batch/htmlurls"),
		waitJS(text(`#papers tr[data-paper="h1"] td.err`)+`.includes('"><img src=x onerror=alert(3)>')`),
		waitJS(`document.querySelectorAll('#papers img, #papers script').length === 0`))

	// Retry the failed paper of a finished batch once its origin is fixed.
	o.fixed.Store(true)
	step("open the failed batch", chromedp.Navigate(s.url+"/#/batch/flaky"),
		waitJS(text(`#papers tr[data-paper="f1"] .paper-state`)+` === 'failed'`),
		waitJS(text(`#papers tr[data-paper="f1"] td.err`)+`.includes('not_found')`))
	selectFilter := func(id, value string) chromedp.Action[chromedp.Void] {
		return chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const s = document.getElementById(%q); s.value = %q; s.dispatchEvent(new Event('change')); })()`, id, value))
	}
	step("filter by failure reason", selectFilter("reason-filter", "FAILURE_REASON_NOT_FOUND"),
		waitJS(`document.querySelectorAll('#papers tbody tr[data-paper]').length === 1 && document.querySelector('#papers tr[data-paper="f1"]')`),
		selectFilter("reason-filter", "FAILURE_REASON_TIMEOUT"),
		waitJS(text(`#papers tbody td`)+` === 'No papers match.'`),
		selectFilter("reason-filter", ""),
		waitJS(`document.querySelectorAll('#papers tbody tr[data-paper]').length === 2`))
	step("retry it", chromedp.Click(`button.retry`),
		waitJS(text(`#papers tr[data-paper="f1"] .paper-state`)+` === 'succeeded'`),
		waitJS(text(`#batch-state`)+` === 'completed'`),
		waitJS(`!document.querySelector('button.retry')`))
	screenshot("dashboard-batch.png")

	if p := logs.take(); len(p) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(p, "\n"))
	}
	t.Logf("browser test took %s", time.Since(start).Round(time.Millisecond))
}

// browseLargeBatch uses the dashboard on batch "big" of s (papers papers, its host paused by a
// Retry-After of an hour, so the papers wait queued) in headless Chromium and measures what an
// operator waits for: the batch page with its first 100 papers, the next page, a state filter,
// the overview, and cancelling the batch with its button. Each step is timed and logged (times are for bench/RESULTS.md, not asserted; a step hung for a minute fails; TestLargeBatch bounds the bytes), and the page must
// log no error. It leaves the batch cancelled.
func browseLargeBatch(t *testing.T, s *stack, papers int) {
	chromePath := chromium(t)
	br := newBrowser(t, chromePath, time.Now())

	br.step("enter the token", chromedp.Navigate(s.url+"/"),
		waitJS(`document.getElementById('error').textContent.includes('bearer token')`),
		chromedp.SendKeys("#token", testToken), chromedp.Click("#token-form button[type=submit]"),
		waitJS(`document.querySelector('#batches tr[data-batch="big"]')`))
	br.logs.take() // the 401s before the token
	rows := `document.querySelectorAll('#papers tbody tr[data-paper]')`
	timed := func(what string, actions ...chromedp.Action[chromedp.Void]) time.Duration {
		t.Helper()
		st := time.Now()
		br.stepWithin(time.Minute, what, actions...)
		d := time.Since(st)
		t.Logf("%s: %v", what, d.Round(time.Millisecond))
		return d
	}
	br.step("leave the page", chromedp.Navigate("about:blank"))
	timed("load the batch page (100 of 100,000 papers)", chromedp.Navigate(s.url+"/#/batch/big"),
		waitJS(rows+`.length === 100 && `+rows+`[0].dataset.paper === 'p000000'`),
		waitJS(text(`#batch-progress`)+fmt.Sprintf(`.includes('of %d papers')`, papers)))
	res, err := chromedp.Run(br.ctx, chromedp.Evaluate[string](`JSON.stringify({
		nav: Math.round(performance.getEntriesByType('navigation')[0].duration),
		resources: performance.getEntriesByType('resource').map((e) => [e.name.replace(location.origin, ''), Math.round(e.duration), e.encodedBodySize])})`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("page timings (ms) and sizes (bytes): %s", res)
	timed("next page", chromedp.Click(`.pager button:nth-child(2)`),
		waitJS(rows+`.length === 100 && `+rows+`[0].dataset.paper === 'p000100'`))
	timed("filter queued papers", chromedp.SetValue(`#state-filter`, "PAPER_STATE_QUEUED"),
		chromedp.Evaluate[chromedp.Void](`document.getElementById('state-filter').dispatchEvent(new Event('change'))`),
		waitJS(text(`.pager .muted`)+` === 'page 1' && `+rows+`.length === 100 && [...`+rows+`].every((r) => r.querySelector('.paper-state').textContent === 'queued')`))
	timed("open the overview", chromedp.Navigate(s.url+"/#/"),
		waitJS(text(`#batches tr[data-batch="big"] .state`)+` === 'running'`),
		waitJS(`document.querySelector('#hosts tr[data-host] .paused-cell') && `+text(`#hosts tr[data-host] .paused-cell`)+`.includes('paused')`))
	br.step("open the batch again", chromedp.Navigate(s.url+"/#/batch/big"), waitJS(rows+`.length === 100`))
	timed("cancel the batch (100,000 papers) with its button", chromedp.Click(`button.cancel`),
		chromedp.Click(`button.cancel`),
		waitJSWithin(time.Minute, text(`#batch-state`)+` === 'cancelled'`),
		waitJSWithin(time.Minute, rows+`.length === 100 && [...`+rows+`].every((r) => r.querySelector('.paper-state').textContent !== 'queued')`))
	if p := br.logs.take(); len(p) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(p, "\n"))
	}
}
