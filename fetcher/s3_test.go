package fetcher

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"

	pb "github.com/paperfetch/paperfetch/gen/paperfetch/v1"
	"github.com/paperfetch/paperfetch/internal/blobstore"
)

// versityInstall is how to get the S3-compatible server these tests run against.
const versityInstall = "go install github.com/versity/versitygw/cmd/versitygw@latest"

// findVersityGW returns the versitygw binary: $VERSITYGW, then PATH, then $GOBIN, $GOPATH/bin
// and ~/go/bin.
func findVersityGW() (string, bool) {
	if p := os.Getenv("VERSITYGW"); p != "" {
		return p, true
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, true
	}
	var dirs []string
	if d := os.Getenv("GOBIN"); d != "" {
		dirs = append(dirs, d)
	}
	if d := os.Getenv("GOPATH"); d != "" {
		dirs = append(dirs, filepath.Join(d, "bin"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, "go", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "versitygw")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, true
		}
	}
	return "", false
}

// startS3 starts versitygw on 127.0.0.1 serving a temp folder with one bucket, and returns the
// bucket URL. It sets the AWS credential variables for the test.
func startS3(t *testing.T) string {
	t.Helper()
	bin, ok := findVersityGW()
	if !ok {
		t.Skipf("versitygw not found (PATH, $GOBIN, $GOPATH/bin, ~/go/bin); install it with: %s", versityInstall)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "papers"), 0o755); err != nil {
		t.Fatal(err)
	}
	const access, secret = "paperfetch-test", "paperfetch-test-secret"
	cmd := exec.Command(bin, "--port", addr, "posix", dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+access, "ROOT_SECRET_KEY="+secret)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	logDone := make(chan struct{})
	var log bytes.Buffer
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !signalled && strings.Contains(sc.Text(), "listening on") {
				signalled = true
				close(ready)
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-logDone
		_ = cmd.Wait()
	})
	select {
	case <-ready:
	case <-logDone:
		t.Fatalf("versitygw exited: %s", log.String())
	case <-time.After(testWait):
		t.Fatal("versitygw did not start")
	}
	// The banner can precede the listener by a moment: wait until it accepts connections.
	deadline := time.Now().Add(testWait)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw not accepting connections: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", access)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	return "s3://papers?endpoint=http://" + addr + "&region=us-east-1&use_path_style=true"
}

func openS3(t *testing.T, url string) (*blob.Bucket, *s3.Client) {
	t.Helper()
	b, err := blobstore.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	var c *s3.Client
	if !b.As(&c) {
		t.Fatal("not an s3 bucket")
	}
	return b, c
}

func TestS3Store(t *testing.T) {
	// The spool file is unnamed (uploaded from the open file), or named as where the file
	// system has no unnamed files (uploaded by name).
	for _, named := range []bool{false, true} {
		t.Run(fmt.Sprint("named-", named), func(t *testing.T) { testS3Store(t, named) })
	}
}

func testS3Store(t *testing.T, named bool) {
	url := startS3(t)
	bucket, _ := openS3(t, url)
	spool := t.TempDir()
	pdf := pdfBody(3<<20, 31)
	origin := hostileOrigin(t, pdf)
	tf := newTestFetcher(t, func(c *Config) { c.Bucket, c.BlobURL, c.SpoolDir = bucket, url, spool })
	if named {
		tf.dl.spool.noUnnamed.Store(true)
	}
	var unnamed []bool
	tf.dl.beforeCommit = func() {
		entries, _ := os.ReadDir(spool)
		unnamed = append(unnamed, len(entries) == 0)
	}

	for range 2 { // the second download finds the object and skips the upload
		out, fail, _ := tf.run(t, origin.URL+"/pdf", nil)
		if fail != nil {
			t.Fatal(fail)
		}
		got, err := bucket.ReadAll(context.Background(), out.blobKey)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, pdf) || out.blobKey != blobstore.ContentKey(sha(pdf)) {
			t.Fatal("stored object differs")
		}
	}
	_, fail, _ := tf.run(t, origin.URL+"/truncated", nil)
	wantFailure(t, fail, pb.FailureClass_FAILURE_CLASS_TRANSIENT, pb.FailureReason_FAILURE_REASON_TRUNCATED)
	if keys := tf.keys(t); len(keys) != 1 {
		t.Fatalf("keys %v", keys)
	}
	if entries, _ := os.ReadDir(spool); len(entries) != 0 {
		t.Fatalf("spool not empty: %v", entries)
	}
	if slices.Contains(unnamed, tf.dl.spool.noUnnamed.Load()) {
		t.Fatalf("spool folder empty at each commit: %v; unnamed files: %v", unnamed, !tf.dl.spool.noUnnamed.Load())
	}
}

// cutReader yields n bytes, then cancels the upload and fails.
type cutReader struct {
	n      int64
	cancel context.CancelFunc
}

func (r *cutReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		r.cancel()
		return 0, errors.New("source failed")
	}
	k := min(int64(len(p)), r.n)
	for i := range p[:k] {
		p[i] = byte(i)
	}
	r.n -= k
	return int(k), nil
}

func listUploads(t *testing.T, c *s3.Client) []string {
	t.Helper()
	out, err := c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String("papers")})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range out.Uploads {
		ids = append(ids, aws.ToString(u.Key)+"/"+aws.ToString(u.UploadId))
	}
	return ids
}

// TestS3CancelledMultipartLeavesNoParts cancels a 40 MiB upload after 24 MiB (multipart, since
// the threshold is 16 MiB): the fetcher's store aborts the multipart upload. A store without the
// FailTimeout fix shows the leak this guards against.
func TestS3CancelledMultipartLeavesNoParts(t *testing.T) {
	url := startS3(t)
	bucket, client := openS3(t, url)
	upload := func(st *store, key string) error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		return st.upload(ctx, key, &cutReader{n: 24 << 20, cancel: cancel})
	}

	// Without the fix: the abort runs on the cancelled context and the parts stay.
	if err := upload(&store{bucket: bucket}, "leaky"); err == nil {
		t.Fatal("upload of a failing source succeeded")
	}
	leaked := listUploads(t, client)
	for _, id := range leaked {
		key, uploadID, _ := strings.Cut(id, "/")
		_, _ = client.AbortMultipartUpload(context.Background(), &s3.AbortMultipartUploadInput{Bucket: aws.String("papers"), Key: aws.String(key), UploadId: aws.String(uploadID)})
	}
	if len(leaked) == 0 {
		t.Log("control: this S3 server/SDK combination did not leave the multipart upload behind")
	}

	// With the fix: nothing is left.
	st := newStore(bucket, url, nil, blobstore.DefaultSyncMode, blobstore.CommitterOptions{})
	if err := upload(st, blobstore.ContentKey(strings.Repeat("cd", 32))); err == nil {
		t.Fatal("upload of a failing source succeeded")
	}
	if ids := listUploads(t, client); len(ids) != 0 {
		t.Fatalf("multipart uploads left: %v", ids)
	}
	if ok, err := bucket.Exists(context.Background(), blobstore.ContentKey(strings.Repeat("cd", 32))); err != nil || ok {
		t.Fatalf("object exists=%v err=%v", ok, err)
	}
	var _ io.Reader = (*cutReader)(nil)
}
