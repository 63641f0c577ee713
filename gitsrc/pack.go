package gitsrc

import (
	"bufio"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/idxfile"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// writePack writes the objects, read from src, into packDir as one
// undeltified pack with its index. It does what go-git's pack encoder and
// pack writer do together, at a fraction of the cost: objects are stored
// without compression (the work dir is thrown away after the build, so
// size matters less than time), and the index is built while writing
// instead of by reading the pack back.
func writePack(src storer.EncodedObjectStorer, packDir string, hashes []plumbing.Hash) (err error) {
	if err := os.MkdirAll(packDir, 0o755); err != nil {
		return fmt.Errorf("creating pack dir: %w", err)
	}
	tmp, err := os.CreateTemp(packDir, "tmp_pack_")
	if err != nil {
		return fmt.Errorf("creating pack: %w", err)
	}
	defer func() {
		_ = tmp.Close()
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()

	sum := sha1.New()
	bw := bufio.NewWriterSize(tmp, 1<<16)
	pw := &packWriter{w: io.MultiWriter(bw, sum), crc: crc32.NewIEEE()}
	var head [12]byte
	copy(head[:4], "PACK")
	binary.BigEndian.PutUint32(head[4:8], 2)
	binary.BigEndian.PutUint32(head[8:], uint32(len(hashes)))
	if _, err := pw.Write(head[:]); err != nil {
		return fmt.Errorf("writing pack: %w", err)
	}

	idx := new(idxfile.Writer)
	if err := idx.OnHeader(uint32(len(hashes))); err != nil {
		return err
	}
	zw, err := zlib.NewWriterLevel(nil, zlib.NoCompression)
	if err != nil {
		return err
	}
	for _, h := range hashes {
		obj, err := src.EncodedObject(plumbing.AnyObject, h)
		if err != nil {
			return fmt.Errorf("reading object %s: %w", h, err)
		}
		pos := pw.n
		pw.crc.Reset()
		if _, err := pw.Write(entryHeader(obj.Type(), obj.Size())); err != nil {
			return fmt.Errorf("writing pack: %w", err)
		}
		r, err := obj.Reader()
		if err != nil {
			return fmt.Errorf("reading object %s: %w", h, err)
		}
		zw.Reset(pw)
		_, err = io.Copy(zw, r)
		_ = r.Close()
		if err == nil {
			err = zw.Close()
		}
		if err != nil {
			return fmt.Errorf("writing object %s to pack: %w", h, err)
		}
		idx.Add(h, uint64(pos), pw.crc.Sum32())
	}

	var packHash plumbing.Hash
	copy(packHash[:], sum.Sum(nil))
	if _, err := bw.Write(packHash[:]); err != nil {
		return fmt.Errorf("writing pack: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing pack: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing pack: %w", err)
	}
	// Packs are immutable: read-only, as git makes them.
	if err := os.Chmod(tmp.Name(), 0o444); err != nil {
		return fmt.Errorf("writing pack: %w", err)
	}
	if err := idx.OnFooter(packHash); err != nil {
		return err
	}
	index, err := idx.Index()
	if err != nil {
		return fmt.Errorf("indexing pack: %w", err)
	}

	base := filepath.Join(packDir, "pack-"+packHash.String())
	if err := os.Rename(tmp.Name(), base+".pack"); err != nil {
		return fmt.Errorf("saving pack: %w", err)
	}
	// The index goes last: its presence tells readers the pack is whole.
	return writeFileAtomic(base+".idx", func(w io.Writer) error {
		_, err := idxfile.NewEncoder(w).Encode(index)
		return err
	})
}

// packWriter counts the bytes written and checksums the current entry.
type packWriter struct {
	w   io.Writer
	crc hash.Hash32
	n   int64
}

func (p *packWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	_, _ = p.crc.Write(b[:n])
	return n, err
}

// entryHeader encodes a pack entry's type and inflated size.
func entryHeader(t plumbing.ObjectType, size int64) []byte {
	b := []byte{byte(t)<<4 | byte(size&0x0f)}
	size >>= 4
	for size > 0 {
		b[len(b)-1] |= 0x80
		b = append(b, byte(size&0x7f))
		size >>= 7
	}
	return b
}

// writeFileAtomic writes a read-only file through a temporary one.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "tmp_idx_")
	if err != nil {
		return fmt.Errorf("creating %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	bw := bufio.NewWriter(tmp)
	if err := write(bw); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o444); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("saving %s: %w", path, err)
	}
	return nil
}
