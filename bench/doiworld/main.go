// Command doiworld serves the DOI fixture world of the tests (internal/doitest) on 127.0.0.1
// so that `paperfetch get` and `paperfetch resolve` can be tried on DOIs offline: a DOI
// resolver, OpenAlex and Unpaywall look-alikes, a publisher (landing pages of every kind and a
// paywall), a repository and an arXiv look-alike. It writes example inputs (BibTeX, a Zotero CSV
// export, a DOI list, RIS, CSL-JSON) into --dir, prints the flags that point paperfetch at the
// world, and serves until interrupted.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/paperfetch/paperfetch/internal/doitest"
)

func main() {
	dir := flag.String("dir", "doi-demo", "`DIR` to write the example inputs and flags into")
	email := flag.String("email", "librarian@example.org", "contact `ADDRESS` the API look-alikes expect")
	flag.Parse()
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "doiworld:", err)
		os.Exit(1)
	}
	w := doitest.Start(*email)
	defer w.Close()
	if _, err := w.WriteInputs(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "doiworld:", err)
		os.Exit(1)
	}
	resolver, _ := url.Parse(w.Resolver.URL)
	flags := strings.Join([]string{"--doi-base", w.Resolver.URL, "--openalex-base", w.OpenAlex.URL,
		"--unpaywall-base", w.Unpaywall.URL, "--arxiv-base", w.Arxiv.URL, "--email", *email,
		"--allow-private-networks", "--host-limit", resolver.Host + "=100ms/2"}, " ")
	if err := os.WriteFile(filepath.Join(*dir, "flags"), []byte(flags+"\n"), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "doiworld:", err)
		os.Exit(1)
	}
	fmt.Printf("serving; inputs and flags in %s\n", *dir)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
}
