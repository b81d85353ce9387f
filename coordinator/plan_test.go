package coordinator

import (
	"reflect"
	"strings"
	"testing"
	"time"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
)

func TestPlan(t *testing.T) {
	rc := ResolveConfig{ArxivBase: "https://ax.example", DOIBase: "https://doi.example", OpenAlexBase: "https://oa.example",
		UnpaywallBase: "https://up.example", Email: "me+x@example.org"}.withDefaults()
	p := newPlan(rc, "10.48550/arxiv.2301.00001", []string{"https://pub.example/a"})
	want := []string{
		"https://pub.example/a",
		"https://ax.example/pdf/2301.00001",
		"https://oa.example/works/doi:10.48550/arxiv.2301.00001?mailto=me%2Bx%40example.org",
		"https://up.example/v2/10.48550/arxiv.2301.00001?email=me%2Bx%40example.org",
		"https://doi.example/10.48550/arxiv.2301.00001",
		"https://doi.example/10.48550/arxiv.2301.00001",
	}
	if !reflect.DeepEqual(p.urls(), want) {
		t.Fatalf("plan %q", p.urls())
	}
	var round plan
	if err := round.unmarshal(p.marshal()); err != nil || !reflect.DeepEqual(&round, p) {
		t.Fatalf("round trip: %v %+v", err, round)
	}
	if err := round.unmarshal(p.marshal()[:10]); err == nil {
		t.Fatal("truncated plan accepted")
	}

	// Candidates go right after the step that found them; the dead map follows its steps.
	dead := uint16(1<<0 | 1<<1 | 1<<5) // the URL, the arXiv PDF and the last step failed
	n, dead := p.insertFound(2, pb.ResolveRoute_RESOLVE_ROUTE_OPENALEX,
		[]string{"https://repo.example/1.pdf", "https://pub.example/a", "ftp://x/y", "https://repo.example/1.pdf", "https://repo.example/2.pdf"}, dead)
	if n != 2 || p.steps[3].url != "https://repo.example/1.pdf" || p.steps[4].url != "https://repo.example/2.pdf" || p.steps[4].source() != "openalex" {
		t.Fatalf("inserted %d: %q", n, p.urls())
	}
	if dead != 1<<0|1<<1|1<<7 {
		t.Fatalf("dead map %016b", dead)
	}
	// The plan never grows beyond maxPlanSteps.
	var many []string
	for i := range 20 {
		many = append(many, "https://m.example/"+strings.Repeat("x", i+1))
	}
	p.insertFound(5, pb.ResolveRoute_RESOLVE_ROUTE_LANDING_PAGE, many, 0)
	if len(p.steps) != maxPlanSteps {
		t.Fatalf("%d steps", len(p.steps))
	}
	// Without an e-mail address, Unpaywall (which refuses such requests) is left out.
	rc.Email = ""
	if q := newPlan(rc, "10.1/x", nil); len(q.steps) != 3 || strings.Contains(strings.Join(q.urls(), " "), "up.example") {
		t.Fatalf("plan without e-mail: %q", q.urls())
	}
}

func TestAPIHostLimits(t *testing.T) {
	c := Config{PerHostDelay: 0, PerHostConcurrency: 8, Resolve: ResolveConfig{OpenAlexBase: "http://127.0.0.1:9001"}}.withDefaults()
	for host, want := range map[string][2]int64{
		"doi.org":           {int64(1e9), 2},
		"127.0.0.1:9001":    {int64(150e6), 4},
		"api.unpaywall.org": {int64(500e6), 2},
		"pub.example":       {0, 8},
	} {
		d, n := c.hostLimits(host)
		if int64(d) != want[0] || int64(n) != want[1] {
			t.Errorf("%s: %v/%d, want %v/%d", host, d, n, want[0], want[1])
		}
	}
	c.HostOverrides = map[string]HostLimits{"doi.org": {Delay: new(time.Duration(3e9)), Concurrency: new(1)}}
	if d, n := c.hostLimits("doi.org"); d != 3e9 || n != 1 {
		t.Errorf("override: %v/%d", d, n)
	}
}

func TestResolveConfigValidate(t *testing.T) {
	if err := (ResolveConfig{}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	for _, rc := range []ResolveConfig{{DOIBase: "ftp://doi.org"}, {OpenAlexBase: "https://u:p@api.example"}, {Email: "not an address"}, {Email: "a@b&mailto=x"},
		// It goes into User-Agent headers (ResolveStep.contact): no control or white space.
		{Email: "a@b\x00c"}, {Email: "a@b\x7fc"}, {Email: "a@b\vc"}, {Email: "a@b\u00a0c"}, {Email: "a@b\u2028c"},
		{Email: strings.Repeat("a", 250) + "@b.cd"}} {
		if err := rc.Validate(); err == nil {
			t.Errorf("%+v accepted", rc)
		}
	}
}

// A forward step (a resolution step's cross-host redirect) is an absolute http(s) URL, is
// never a URL the plan resolves already (a loop, the DOI resolver's own URL included), and a
// plan takes at most maxForwards of them.
func TestPlanForwardBounds(t *testing.T) {
	rc := ResolveConfig{DOIBase: "https://doi.example", OpenAlexBase: "https://oa.example"}.withDefaults()
	p := newPlan(rc, "10.1/x", nil)
	land := len(p.steps) - 2 // the landing page step at the DOI resolver
	if p.steps[land].route != pb.ResolveRoute_RESOLVE_ROUTE_LANDING_PAGE {
		t.Fatalf("plan %q: step %d is not the landing page", p.urls(), land)
	}
	for _, bad := range []string{"ftp://pub.example/a", "/relative", "https://user:pw@pub.example/a", "https://doi.example/10.1/x"} {
		if ok, _ := p.insertForward(land, bad, 0); ok {
			t.Fatalf("forward to %q accepted: %q", bad, p.urls())
		}
	}
	cur := land
	for i := range maxForwards {
		u := "https://h" + strings.Repeat("x", i) + ".example/a"
		if ok, _ := p.insertForward(cur, u, 0); !ok {
			t.Fatalf("forward %d to %q refused", i, u)
		}
		cur++
		if ok, _ := p.insertForward(cur, "https://h.example/a", 0); ok {
			t.Fatalf("forward back to the first publisher accepted: %q", p.urls())
		}
	}
	if ok, _ := p.insertForward(cur, "https://last.example/a", 0); ok {
		t.Fatalf("forward %d accepted: %q", maxForwards+1, p.urls())
	}
}
