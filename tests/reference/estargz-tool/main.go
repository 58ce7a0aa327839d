// estargz-tool is crfs's test peer: a small program that drives the reference
// eStargz implementation (github.com/containerd/stargz-snapshotter/estargz, as
// packaged by Debian in golang-github-containerd-stargz-snapshotter-dev) so that
// crfs's blobs can be checked by it and blobs made by it can be read by crfs.
//
// It is built in GOPATH mode against /usr/share/gocode; see
// tests/helpers/reference.ts.
//
// Usage:
//
//	estargz-tool verify BLOB [--toc-digest sha256:...]
//	estargz-tool build IN.tar OUT.stargz [--chunk-size N] [--prioritize a,b]
//	    [--prioritize-file NAME]... [--allow-missing-prioritized]
//	    [--compression-level N] [--gomaxprocs N]
//	estargz-tool list-legacy BLOB
//
// Reports are JSON on stdout. Any failure prints "estargz-tool: ..." on stderr
// and exits 1 (2 for usage errors).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	digest "github.com/opencontainers/go-digest"
)

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	if len(os.Args) < 2 {
		fail(usageError{"missing subcommand (verify, build, append, list-legacy)"})
	}
	var err error
	switch os.Args[1] {
	case "verify":
		err = cmdVerify(os.Args[2:], true)
	case "list-legacy":
		err = cmdVerify(os.Args[2:], false)
	case "build":
		err = cmdBuild(os.Args[2:])
	case "append":
		err = cmdAppend(os.Args[2:])
	default:
		err = usageError{fmt.Sprintf("unknown subcommand %q (verify, build, append, list-legacy)", os.Args[1])}
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "estargz-tool: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(2)
	}
	os.Exit(1)
}

// parseArgs splits positional arguments from --flag value / --flag=value pairs.
// Flags named in boolFlags take no value.
func parseArgs(args []string, valueFlags, boolFlags []string) (pos []string, flags map[string]string, multi map[string][]string, err error) {
	flags = map[string]string{}
	multi = map[string][]string{}
	isIn := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "--") {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(a[2:], "=")
		switch {
		case isIn(boolFlags, name):
			if hasVal {
				return nil, nil, nil, usageError{fmt.Sprintf("flag --%s takes no value", name)}
			}
			flags[name] = "true"
		case isIn(valueFlags, name):
			if !hasVal {
				if i+1 >= len(args) {
					return nil, nil, nil, usageError{fmt.Sprintf("flag --%s needs a value", name)}
				}
				i++
				val = args[i]
			}
			flags[name] = val
			multi[name] = append(multi[name], val)
		default:
			return nil, nil, nil, usageError{fmt.Sprintf("unknown flag %q", a)}
		}
	}
	return pos, flags, multi, nil
}

func writeJSON(v interface{}) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ---------------------------------------------------------------------------
// verify / list-legacy

type chunkReport struct {
	Offset      int64  `json:"offset"`
	NextOffset  int64  `json:"nextOffset"`
	ChunkOffset int64  `json:"chunkOffset"`
	ChunkSize   int64  `json:"chunkSize"`
	ChunkDigest string `json:"chunkDigest,omitempty"`
	Verified    bool   `json:"verified"`
}

type entryReport struct {
	Name      string            `json:"name"`
	RawName   string            `json:"rawName"`
	Type      string            `json:"type"`
	Size      int64             `json:"size"`
	Mode      int64             `json:"mode"`
	UID       int               `json:"uid"`
	GID       int               `json:"gid"`
	UserName  string            `json:"userName"`
	GroupName string            `json:"groupName"`
	LinkName  string            `json:"linkName"`
	ModTime   string            `json:"modtime"`
	DevMajor  int               `json:"devMajor"`
	DevMinor  int               `json:"devMinor"`
	Xattrs    map[string][]byte `json:"xattrs"` // values are base64 in JSON
	Digest    string            `json:"digest"`
	SHA256    string            `json:"sha256,omitempty"`
	NumLink   int               `json:"numLink"`
	Offset    int64             `json:"offset"`
	Chunks    []chunkReport     `json:"chunks,omitempty"`
}

type treeNode struct {
	Name    string `json:"name"`
	Type    string `json:"type"`
	Mode    int64  `json:"mode"`
	NumLink int    `json:"numLink"`
}

type verifyReport struct {
	Footer     string `json:"footer"` // "estargz" (51 bytes) or "legacy" (47 bytes)
	TOCOffset  int64  `json:"tocOffset"`
	TOCDigest  string `json:"tocDigest"`
	TOCVersion int    `json:"tocVersion"`
	Verified   bool   `json:"verified"` // chunk digests checked through VerifyTOC/Verifiers
	// Warnings are findings the reference reader itself accepts (e.g. a regular file without a
	// whole-file digest while every chunk has its chunkDigest).
	Warnings []string      `json:"warnings"`
	Entries  []entryReport `json:"entries"`
	Tree     []treeNode    `json:"tree"`
}

func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func cmdVerify(args []string, strict bool) error {
	sub := "verify"
	valueFlags := []string{"toc-digest"}
	if !strict {
		sub = "list-legacy"
		valueFlags = nil
	}
	pos, flags, _, err := parseArgs(args, valueFlags, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{fmt.Sprintf("%s: want exactly one BLOB argument", sub)}
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

	// The reference reader.
	r, err := estargz.Open(sr)
	if err != nil {
		return fmt.Errorf("%s: estargz.Open: %w", sub, err)
	}
	tocDigest := r.TOCDigest()

	// Footer kind and the TOC in its original order (the Reader does not export
	// its JTOC, so parse it again with the library's own decompressor).
	tocOffset, footerSize, err := estargz.OpenFooter(sr)
	if err != nil {
		return fmt.Errorf("%s: estargz.OpenFooter: %w", sub, err)
	}
	report := verifyReport{TOCOffset: tocOffset, TOCDigest: tocDigest.String(), Warnings: []string{}}
	var dec estargz.Decompressor = &estargz.GzipDecompressor{}
	report.Footer = "estargz"
	if footerSize != estargz.FooterSize {
		dec = &estargz.LegacyGzipDecompressor{}
		report.Footer = "legacy"
	}
	toc, tocDigest2, err := dec.ParseTOC(io.NewSectionReader(sr, tocOffset, st.Size()-tocOffset-footerSize))
	if err != nil {
		return fmt.Errorf("%s: ParseTOC: %w", sub, err)
	}
	if tocDigest2 != tocDigest {
		return fmt.Errorf("%s: TOC digest differs between Open (%s) and ParseTOC (%s)", sub, tocDigest, tocDigest2)
	}
	report.TOCVersion = toc.Version

	var ev estargz.TOCEntryVerifier
	if strict {
		if want, ok := flags["toc-digest"]; ok {
			d, err := digest.Parse(want)
			if err != nil {
				return usageError{fmt.Sprintf("verify: bad --toc-digest: %v", err)}
			}
			ev, err = r.VerifyTOC(d)
			if err != nil {
				return fmt.Errorf("verify: VerifyTOC: %w (computed TOC digest %s)", err, tocDigest)
			}
		} else {
			ev, err = r.Verifiers()
			if err != nil {
				return fmt.Errorf("verify: Verifiers: %w", err)
			}
		}
		report.Verified = true
	}

	contentSHA := map[string]string{} // cleaned name of a reg entry -> sha256 of its content
	for _, raw := range toc.Entries {
		if raw.Type == "chunk" {
			continue
		}
		name := cleanName(raw.Name)
		er := entryReport{
			Name:     name,
			RawName:  raw.Name,
			Type:     raw.Type,
			LinkName: raw.LinkName,
			Xattrs:   raw.Xattrs,
		}
		// Reader's view of the entry (after its own initialisation). For a
		// hardlink, Lookup resolves to the link's target.
		ent, ok := r.Lookup(name)
		if !ok {
			return fmt.Errorf("%s: %q is in the TOC but the reader cannot look it up", sub, name)
		}
		own := ent
		if raw.Type == "hardlink" {
			own = raw
		}
		er.Size = own.Size
		er.Mode = own.Mode
		er.UID = own.UID
		er.GID = own.GID
		er.UserName = own.Uname
		er.GroupName = own.Gname
		er.ModTime = own.ModTime3339
		er.DevMajor = own.DevMajor
		er.DevMinor = own.DevMinor
		er.Digest = own.Digest
		er.Offset = own.Offset
		er.NumLink = ent.NumLink
		if er.Xattrs == nil {
			er.Xattrs = map[string][]byte{}
		}

		if raw.Type == "reg" {
			sum, chunks, err := readRegular(r, ev, name, ent, &report.Warnings)
			if err != nil {
				return fmt.Errorf("%s: %w", sub, err)
			}
			er.SHA256 = sum
			er.Chunks = chunks
			contentSHA[name] = sum
		}
		report.Entries = append(report.Entries, er)
	}
	// Hardlinks: content of their target, read through the reader.
	for i := range report.Entries {
		er := &report.Entries[i]
		if er.Type != "hardlink" {
			continue
		}
		ent, _ := r.Lookup(er.Name)
		if ent.Type != "reg" {
			continue
		}
		if sum, ok := contentSHA[cleanName(ent.Name)]; ok {
			er.SHA256 = sum
		} else {
			sum, _, err := readRegular(r, nil, er.Name, ent, &report.Warnings)
			if err != nil {
				return fmt.Errorf("%s: %w", sub, err)
			}
			er.SHA256 = sum
		}
	}

	root, ok := r.Lookup("")
	if !ok {
		return fmt.Errorf("%s: reader has no root directory", sub)
	}
	walkTree(root, "", &report.Tree)
	return writeJSON(report)
}

// readRegular reads every byte of a regular file through the reference reader,
// chunk by chunk, checking each chunk with the verifier (when ev != nil) and the
// whole-file digest recorded in the TOC (a mismatch is an error, an absence a warning).
func readRegular(r *estargz.Reader, ev estargz.TOCEntryVerifier, name string, ent *estargz.TOCEntry, warnings *[]string) (string, []chunkReport, error) {
	fr, err := r.OpenFile(name)
	if err != nil {
		return "", nil, fmt.Errorf("OpenFile(%q): %w", name, err)
	}
	if fr.Size() != ent.Size {
		return "", nil, fmt.Errorf("%q: reader size %d != TOC size %d", name, fr.Size(), ent.Size)
	}
	whole := sha256.New()
	var chunks []chunkReport
	var n int64
	for n < ent.Size {
		ce, ok := r.ChunkEntryForOffset(name, n)
		if !ok {
			return "", nil, fmt.Errorf("%q: no chunk entry for file offset %d", name, n)
		}
		if ce.ChunkOffset != n || ce.ChunkSize <= 0 || n+ce.ChunkSize > ent.Size {
			return "", nil, fmt.Errorf("%q: chunk for file offset %d has chunkOffset=%d chunkSize=%d (file size %d)",
				name, n, ce.ChunkOffset, ce.ChunkSize, ent.Size)
		}
		buf := make([]byte, ce.ChunkSize)
		if _, err := fr.ReadAt(buf, n); err != nil && !(err == io.EOF && n+ce.ChunkSize == ent.Size) {
			return "", nil, fmt.Errorf("%q: reading chunk at file offset %d (blob offset %d): %w", name, n, ce.Offset, err)
		}
		cr := chunkReport{
			Offset:      ce.Offset,
			NextOffset:  ce.NextOffset(),
			ChunkOffset: ce.ChunkOffset,
			ChunkSize:   ce.ChunkSize,
			ChunkDigest: ce.ChunkDigest,
		}
		if ev != nil {
			v, err := ev.Verifier(ce)
			if err != nil {
				return "", nil, fmt.Errorf("%q: chunk at file offset %d: %w", name, n, err)
			}
			if _, err := v.Write(buf); err != nil {
				return "", nil, err
			}
			if !v.Verified() {
				return "", nil, fmt.Errorf("%q: chunk at file offset %d (blob offset %d, size %d) does not match its digest %s",
					name, n, ce.Offset, ce.ChunkSize, ce.ChunkDigest)
			}
			cr.Verified = true
		}
		whole.Write(buf)
		chunks = append(chunks, cr)
		n += ce.ChunkSize
	}
	sum := "sha256:" + hex.EncodeToString(whole.Sum(nil))
	if ent.Digest != "" && ent.Digest != sum {
		return "", nil, fmt.Errorf("%q: content sha256 %s does not match the TOC digest %s", name, sum, ent.Digest)
	}
	if ent.Size > 0 && ent.Digest == "" {
		*warnings = append(*warnings, fmt.Sprintf("%q: regular file has no digest in the TOC", name))
	}
	return sum, chunks, nil
}

func walkTree(e *estargz.TOCEntry, name string, out *[]treeNode) {
	*out = append(*out, treeNode{Name: name, Type: e.Type, Mode: e.Mode, NumLink: e.NumLink})
	if e.Type != "dir" {
		return
	}
	var names []string
	kids := map[string]*estargz.TOCEntry{}
	e.ForeachChild(func(base string, c *estargz.TOCEntry) bool {
		names = append(names, base)
		kids[base] = c
		return true
	})
	sort.Strings(names)
	for _, b := range names {
		child := b
		if name != "" {
			child = name + "/" + b
		}
		walkTree(kids[b], child, out)
	}
}

// ---------------------------------------------------------------------------
// build

type buildReport struct {
	TOCDigest         string   `json:"tocDigest"`
	DiffID            string   `json:"diffID"`
	BlobDigest        string   `json:"blobDigest"`
	Size              int64    `json:"size"`
	MissedPrioritized []string `json:"missedPrioritized,omitempty"`
}

func cmdBuild(args []string) error {
	pos, flags, multi, err := parseArgs(args,
		[]string{"chunk-size", "prioritize", "prioritize-file", "compression-level", "gomaxprocs"},
		[]string{"allow-missing-prioritized"})
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageError{"build: want IN.tar OUT.stargz"}
	}
	intArg := func(name string) (int, bool, error) {
		s, ok := flags[name]
		if !ok {
			return 0, false, nil
		}
		v, err := strconv.Atoi(s)
		if err != nil {
			return 0, false, usageError{fmt.Sprintf("build: bad --%s: %v", name, err)}
		}
		return v, true, nil
	}
	var opts []estargz.Option
	if v, ok, err := intArg("chunk-size"); err != nil {
		return err
	} else if ok {
		opts = append(opts, estargz.WithChunkSize(v))
	}
	if v, ok, err := intArg("compression-level"); err != nil {
		return err
	} else if ok {
		opts = append(opts, estargz.WithCompressionLevel(v))
	}
	if v, ok, err := intArg("gomaxprocs"); err != nil {
		return err
	} else if ok {
		// Build splits the input into at least GOMAXPROCS parts, each ending a
		// gzip member: fixing it makes the output reproducible across machines.
		runtime.GOMAXPROCS(v)
	}
	// --prioritize a,b (comma-separated, repeatable) first, then --prioritize-file NAME
	// (repeatable; for names containing commas), each in the order given.
	var prioritized []string
	for _, p := range multi["prioritize"] {
		for _, n := range strings.Split(p, ",") {
			if n != "" {
				prioritized = append(prioritized, n)
			}
		}
	}
	prioritized = append(prioritized, multi["prioritize-file"]...)
	if len(prioritized) > 0 {
		opts = append(opts, estargz.WithPrioritizedFiles(prioritized))
	}
	var missed []string
	if flags["allow-missing-prioritized"] == "true" {
		opts = append(opts, estargz.WithAllowPrioritizeNotFound(&missed))
	}

	in, err := os.Open(pos[0])
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	blob, err := estargz.Build(io.NewSectionReader(in, 0, st.Size()), opts...)
	if err != nil {
		return fmt.Errorf("build: estargz.Build: %w", err)
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
		return fmt.Errorf("build: writing %s: %w", pos[1], err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := blob.Close(); err != nil {
		return err
	}
	return writeJSON(buildReport{
		TOCDigest:         blob.TOCDigest().String(),
		DiffID:            blob.DiffID().String(),
		BlobDigest:        "sha256:" + hex.EncodeToString(h.Sum(nil)),
		Size:              n,
		MissedPrioritized: missed,
	})
}

// cmdAppend writes TAR as an eStargz blob OUT with the streaming estargz.Writer
// (Writer.AppendTar): entries stay in tar order, duplicates included, unlike Build,
// which keeps only the last entry of a name and reorders.
func cmdAppend(args []string) error {
	if len(args) != 2 {
		return usageError{"usage: append TAR OUT"}
	}
	in, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(args[1])
	if err != nil {
		return err
	}
	h := sha256.New()
	counter := &countWriter{}
	w := estargz.NewWriter(io.MultiWriter(out, h, counter))
	if err := w.AppendTar(in); err != nil {
		out.Close()
		return fmt.Errorf("append: AppendTar: %w", err)
	}
	toc, err := w.Close()
	if err != nil {
		out.Close()
		return fmt.Errorf("append: Close: %w", err)
	}
	if err := out.Close(); err != nil {
		return err
	}
	return writeJSON(buildReport{
		TOCDigest:  toc.String(),
		DiffID:     w.DiffID(),
		BlobDigest: "sha256:" + hex.EncodeToString(h.Sum(nil)),
		Size:       counter.n,
	})
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
