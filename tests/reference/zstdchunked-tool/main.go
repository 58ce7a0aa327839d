// zstdchunked-tool is crfs's test peer for zstd:chunked: it drives the Go
// reference reader and writer of github.com/containerd/stargz-snapshotter's
// estargz/zstdchunked package (Debian: golang-github-containerd-stargz-snapshotter-dev)
// so that crfs's zstd:chunked blobs can be checked by it and blobs it writes can
// be read by crfs.
//
// It is built in GOPATH mode against /usr/share/gocode; see
// tests/helpers/reference_zstd.ts.
//
// Usage:
//
//	zstdchunked-tool verify BLOB [--toc-digest sha256:...] [--lax]
//	zstdchunked-tool build IN.tar OUT.zst [--chunk-size N]
//
// verify opens BLOB through its footer, checks the TOC digest (VerifyTOC, which
// wants a chunkDigest on every chunk; --lax only checks whole-file digests, for
// containers/storage blobs that leave single-chunk chunkDigests out), reads every
// regular file through the reader and reports sha256 of each. Reports are JSON
// on stdout; failures print "zstdchunked-tool: ..." on stderr and exit 1.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
)

type entryReport struct {
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Size     int64             `json:"size"`
	Mode     int64             `json:"mode"`
	LinkName string            `json:"linkName"`
	Xattrs   map[string]string `json:"xattrs"`
	SHA256   string            `json:"sha256,omitempty"`
	Chunks   int               `json:"chunks"`
}

type verifyReport struct {
	TOCDigest string        `json:"tocDigest"`
	Verified  bool          `json:"verified"`
	Entries   []entryReport `json:"entries"`
}

type buildReport struct {
	TOCDigest   string            `json:"tocDigest"`
	DiffID      string            `json:"diffID"`
	BlobDigest  string            `json:"blobDigest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
}

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: zstdchunked-tool verify|build ..."))
	}
	var err error
	switch os.Args[1] {
	case "verify":
		err = cmdVerify(os.Args[2:])
	case "build":
		err = cmdBuild(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "zstdchunked-tool: %v\n", err)
	os.Exit(1)
}

// args splits positional arguments from --name value flags (and bare --lax).
func args(in []string) (pos []string, flags map[string]string) {
	flags = map[string]string{}
	for i := 0; i < len(in); i++ {
		a := in[i]
		if !strings.HasPrefix(a, "--") {
			pos = append(pos, a)
			continue
		}
		name := a[2:]
		if name == "lax" {
			flags[name] = "true"
			continue
		}
		if i+1 < len(in) {
			i++
			flags[name] = in[i]
		}
	}
	return pos, flags
}

func cmdVerify(in []string) error {
	pos, flags := args(in)
	if len(pos) != 1 {
		return fmt.Errorf("verify: want BLOB")
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	sr := io.NewSectionReader(f, 0, st.Size())
	r, err := estargz.Open(sr, estargz.WithDecompressors(new(zstdchunked.Decompressor)))
	if err != nil {
		return fmt.Errorf("verify: estargz.Open: %w", err)
	}
	report := verifyReport{TOCDigest: r.TOCDigest().String()}
	var ev estargz.TOCEntryVerifier
	if flags["lax"] != "true" {
		want := r.TOCDigest()
		if d, ok := flags["toc-digest"]; ok {
			if want, err = digest.Parse(d); err != nil {
				return err
			}
		}
		if ev, err = r.VerifyTOC(want); err != nil {
			return fmt.Errorf("verify: VerifyTOC: %w", err)
		}
		report.Verified = true
	}
	root, ok := r.Lookup("")
	if !ok {
		return fmt.Errorf("verify: no root")
	}
	var walk func(dir *estargz.TOCEntry, prefix string) error
	walk = func(dir *estargz.TOCEntry, prefix string) error {
		var err error
		dir.ForeachChild(func(base string, e *estargz.TOCEntry) bool {
			name := base
			if prefix != "" {
				name = prefix + "/" + base
			}
			er := entryReport{Name: name, Type: e.Type, Size: e.Size, Mode: e.Mode, LinkName: e.LinkName, Xattrs: map[string]string{}}
			for k, v := range e.Xattrs {
				er.Xattrs[k] = string(v)
			}
			if e.Type == "reg" {
				er.SHA256, er.Chunks, err = readFile(r, ev, name, e)
				if err != nil {
					return false
				}
			}
			report.Entries = append(report.Entries, er)
			if e.Type == "dir" {
				if err = walk(e, name); err != nil {
					return false
				}
			}
			return true
		})
		return err
	}
	if err := walk(root, ""); err != nil {
		return err
	}
	return writeJSON(report)
}

func readFile(r *estargz.Reader, ev estargz.TOCEntryVerifier, name string, ent *estargz.TOCEntry) (string, int, error) {
	fr, err := r.OpenFile(name)
	if err != nil {
		return "", 0, fmt.Errorf("OpenFile(%q): %w", name, err)
	}
	whole := sha256.New()
	chunks := 0
	for n := int64(0); n < ent.Size; {
		ce, ok := r.ChunkEntryForOffset(name, n)
		if !ok || ce.ChunkSize <= 0 {
			return "", 0, fmt.Errorf("%q: no chunk at file offset %d", name, n)
		}
		buf := make([]byte, ce.ChunkSize)
		if _, err := fr.ReadAt(buf, n); err != nil && err != io.EOF {
			return "", 0, fmt.Errorf("%q: reading at %d: %w", name, n, err)
		}
		if ev != nil {
			v, err := ev.Verifier(ce)
			if err != nil {
				return "", 0, fmt.Errorf("%q: chunk at %d: %w", name, n, err)
			}
			v.Write(buf)
			if !v.Verified() {
				return "", 0, fmt.Errorf("%q: chunk at %d does not match its digest", name, n)
			}
		}
		whole.Write(buf)
		chunks++
		n += ce.ChunkSize
	}
	sum := "sha256:" + hex.EncodeToString(whole.Sum(nil))
	if ent.Digest != "" && ent.Digest != sum {
		return "", 0, fmt.Errorf("%q: content %s does not match its digest %s", name, sum, ent.Digest)
	}
	return sum, chunks, nil
}

func cmdBuild(in []string) error {
	pos, flags := args(in)
	if len(pos) != 2 {
		return fmt.Errorf("build: want IN.tar OUT.zst")
	}
	opts := []estargz.Option{}
	if v, ok := flags["chunk-size"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			return err
		}
		opts = append(opts, estargz.WithChunkSize(n))
	}
	annotations := map[string]string{}
	opts = append(opts, estargz.WithCompression(compression{
		&zstdchunked.Compressor{CompressionLevel: zstd.SpeedDefault, Metadata: annotations},
		&zstdchunked.Decompressor{},
	}))
	f, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	blob, err := estargz.Build(io.NewSectionReader(f, 0, st.Size()), opts...)
	if err != nil {
		return fmt.Errorf("build: %w", err)
	}
	defer blob.Close()
	out, err := os.Create(pos[1])
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), blob)
	if err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return writeJSON(buildReport{
		TOCDigest:   blob.TOCDigest().String(),
		DiffID:      blob.DiffID().String(),
		BlobDigest:  "sha256:" + hex.EncodeToString(h.Sum(nil)),
		Size:        n,
		Annotations: annotations,
	})
}

// compression is the writer and reader halves estargz.WithCompression wants.
type compression struct {
	*zstdchunked.Compressor
	*zstdchunked.Decompressor
}

func writeJSON(v interface{}) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
