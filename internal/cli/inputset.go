package cli

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/proto"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/input"
)

// inputSet is the inputs of a command and how to parse them.
type inputSet struct {
	names []string
	args  []string  // papers given as arguments, read as the input named input.ArgsName
	stdin io.Reader // for "-"; must be re-readable for a second pass (a spooled file)
	opts  input.Options
	// kept, when set, is filled by scan with the papers it read, for the passes that follow
	// (submitter.fill): see keptPapers.
	kept *keptPapers
}

// Bounds of keptPapers: a scan keeps the papers it read when they are at most maxKeptPapers
// papers and maxKeptBytes of encoded specs (about 5 MiB of memory for 10,000 one-URL papers).
const (
	maxKeptPapers = 32_768
	maxKeptBytes  = 8 << 20
)

// keptPapers is what a scan read, kept so that the submission does not read and parse the
// inputs a second time (get: ~1% of its CPU for 10,000 papers), and submits exactly the papers
// whose digest named the batch even if an input file changed in between. Inputs above the
// bounds (maxKeptPapers, maxKeptBytes) are read again instead.
type keptPapers struct {
	specs    []*pb.PaperSpec // in input order, duplicates left out (as a pass reads them)
	bad      int             // malformed entries skipped
	complete bool            // the scan read every input within the bounds
}

// newInputSet sorts the command-line arguments into input files, "-" (standard input) and
// papers (URLs, arXiv ids), which are read, in the order of their first one, as one input
// named input.ArgsName.
func newInputSet(args []string, opts input.Options) (inputSet, error) {
	in := inputSet{opts: opts}
	exists := func(name string) bool { _, err := os.Stat(name); return err == nil }
	for _, arg := range args {
		switch input.ClassifyArg(arg, exists) {
		case input.ArgPaper:
			if len(in.args) == 0 {
				in.names = append(in.names, input.ArgsName)
			}
			in.args = append(in.args, input.Unwrap(arg))
		default:
			in.names = append(in.names, arg)
		}
	}
	return in, nil
}

// stream opens a fresh pass over the inputs.
func (in inputSet) stream() (*input.Stream, error) {
	if s, ok := in.stdin.(io.Seeker); ok {
		if _, err := s.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("rewind standard input copy: %w", err)
		}
	}
	return input.NewStream(in.names, in.stdin, in.opts).WithArgs(in.args), nil
}

// checkInputArgs checks that every argument is "-", a paper, or a readable file (not a
// folder), before anything starts.
func checkInputArgs(inputs []string) error {
	stdins := 0
	exists := func(name string) bool { _, err := os.Stat(name); return err == nil }
	for _, name := range inputs {
		switch input.ClassifyArg(name, exists) {
		case input.ArgStdin:
			stdins++
			continue
		case input.ArgPaper:
			continue
		}
		st, err := os.Stat(name)
		if errors.Is(err, os.ErrNotExist) {
			return &exitError{code: ExitUsage, err: fmt.Errorf("%s: no such file, and not a URL, an arXiv id or a DOI", name)}
		}
		if err != nil {
			return &exitError{code: ExitUsage, err: fmt.Errorf("input: %w", err)}
		}
		if st.IsDir() {
			return &exitError{code: ExitUsage, err: fmt.Errorf("input %s is a directory", name)}
		}
	}
	if stdins > 1 {
		return usagef("standard input (\"-\") can be given only once")
	}
	return nil
}

// eachSpec reads the inputs to their end, passing each malformed entry to bad (when not nil)
// and each paper's spec to fn; it stops at the first error of fn or of reading.
func (in inputSet) eachSpec(bad func(error), fn func(*pb.PaperSpec) error) error {
	st, err := in.stream()
	if err != nil {
		return err
	}
	defer st.Close()
	return forEachPaper(st, func(le *input.LineError) {
		if bad != nil {
			bad(le)
		}
	}, func(p input.Paper) error { return fn(p.Spec()) })
}

// forEachPaper reads st to its end, passing each malformed entry to bad and each paper to fn;
// it stops at the first error of fn or of reading.
func forEachPaper(st *input.Stream, bad func(*input.LineError), fn func(input.Paper) error) error {
	for {
		p, err := st.Next()
		if err != nil {
			var le *input.LineError // declared here: errors.As moves it to the heap
			switch {
			case errors.Is(err, io.EOF):
				return nil
			case errors.As(err, &le):
				bad(le)
				continue
			}
			return err
		}
		if err := fn(p); err != nil {
			return err
		}
	}
}

// scanResult is what a first pass over the inputs found.
type scanResult struct {
	papers     int64
	bad        int
	duplicates int
	digest     string // hex SHA-256 of the papers, in order
}

// scan reads every input once: it counts the papers, reports each malformed entry through
// report, and computes a digest of the papers (from which `get` derives its batch id).
func (in inputSet) scan(ctx context.Context, report func(error)) (scanResult, error) {
	st, err := in.stream()
	if err != nil {
		return scanResult{}, err
	}
	defer st.Close()
	h := sha256.New()
	h.Write([]byte("paperfetch-input-v1\x00"))
	var res scanResult
	var lenBuf [8]byte
	var b []byte // each paper's encoding, in one buffer reused (a paper is at most ~1 MiB)
	det := proto.MarshalOptions{Deterministic: true}
	var kept []*pb.PaperSpec
	keep, keptBytes := in.kept != nil, 0
	err = forEachPaper(st, func(le *input.LineError) {
		res.bad++
		report(le)
	}, func(p input.Paper) error {
		spec := p.Spec()
		var err error
		b, err = det.MarshalAppend(b[:0], spec)
		if err != nil {
			return fmt.Errorf("encode paper %s: %w", p.ID, err)
		}
		binary.BigEndian.PutUint64(lenBuf[:], uint64(len(b)))
		h.Write(lenBuf[:])
		h.Write(b)
		if keep {
			if keptBytes += len(b); len(kept) == maxKeptPapers || keptBytes > maxKeptBytes {
				keep, kept = false, nil
			} else {
				kept = append(kept, spec)
			}
		}
		res.papers++
		if res.papers%100_000 == 0 {
			return ctx.Err()
		}
		return nil
	})
	if err != nil {
		return res, err
	}
	res.duplicates = st.Duplicates()
	res.digest = hex.EncodeToString(h.Sum(nil))
	if in.kept != nil {
		*in.kept = keptPapers{specs: kept, bad: res.bad, complete: keep}
	}
	return res, nil
}
