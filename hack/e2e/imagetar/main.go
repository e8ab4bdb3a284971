// Command imagetar writes a container image as a docker-save tarball (what `docker save` writes
// and `ctr images import` reads) from directories, one layer each, so that make test-e2e can
// build its images without docker or a registry.
//
//	imagetar -o app.tar -tag app:e2e -entrypoint /app -user 65532:65532 -layer dir1 -layer dir2
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var layers, env, entrypoint listFlag
	out := flag.String("o", "", "output tarball")
	tag := flag.String("tag", "", "image name:tag")
	user := flag.String("user", "", "user[:group] the image runs as")
	flag.Var(&layers, "layer", "directory whose tree is one layer (repeatable, bottom first)")
	flag.Var(&env, "env", "KEY=VALUE of the image's environment (repeatable)")
	flag.Var(&entrypoint, "entrypoint", "entrypoint argument (repeatable)")
	flag.Parse()
	if *out == "" || *tag == "" || len(layers) == 0 {
		fmt.Fprintln(os.Stderr, "imagetar: -o, -tag and at least one -layer are needed")
		os.Exit(2)
	}
	if err := write(*out, *tag, *user, layers, env, entrypoint); err != nil {
		fmt.Fprintln(os.Stderr, "imagetar:", err)
		os.Exit(1)
	}
}

func write(out, tag, user string, layers, env, entrypoint []string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	image := tar.NewWriter(f)
	var diffIDs, layerFiles []string
	for _, dir := range layers {
		layer, err := tarDir(dir)
		if err != nil {
			return fmt.Errorf("layer %s: %w", dir, err)
		}
		sum := sha256.Sum256(layer)
		id := hex.EncodeToString(sum[:])
		diffIDs = append(diffIDs, "sha256:"+id)
		layerFiles = append(layerFiles, id+"/layer.tar")
		if err := addFile(image, id+"/layer.tar", layer); err != nil {
			return err
		}
	}
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": entrypoint, "User": user, "Env": env},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	if err != nil {
		return err
	}
	configSum := sha256.Sum256(config)
	configFile := hex.EncodeToString(configSum[:]) + ".json"
	if err := addFile(image, configFile, config); err != nil {
		return err
	}
	manifest, err := json.Marshal([]map[string]any{{"Config": configFile, "RepoTags": []string{tag}, "Layers": layerFiles}})
	if err != nil {
		return err
	}
	if err := addFile(image, "manifest.json", manifest); err != nil {
		return err
	}
	if err := image.Close(); err != nil {
		return err
	}
	return f.Close()
}

func addFile(w *tar.Writer, name string, data []byte) error {
	if err := w.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// tarDir returns the tree under dir as an uncompressed tar, owned by root, with modes and
// symlinks kept.
func tarDir(dir string) ([]byte, error) {
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(path); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = 0, 0, "", ""
		if err := w.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(w, src)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
