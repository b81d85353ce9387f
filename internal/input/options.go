package input

// DefaultMaxLineBytes is the longest line accepted unless Options says otherwise; a longer line
// is reported as an error and skipped.
const DefaultMaxLineBytes = 1 << 20

// Options configures how inputs are parsed.
type Options struct {
	// Format of the inputs; FormatAuto detects it per input.
	Format Format
	// ArxivBase is where arXiv ids resolve, as ArxivBase/pdf/ID. Empty means DefaultArxivBase.
	ArxivBase string
	// MaxLineBytes caps the length of a line. 0 means DefaultMaxLineBytes.
	MaxLineBytes int
}

func (o Options) withDefaults() Options {
	if o.ArxivBase == "" {
		o.ArxivBase = DefaultArxivBase
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = DefaultMaxLineBytes
	}
	return o
}
