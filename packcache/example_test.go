package packcache_test

import (
	"compress/gzip"
	"errors"
	"io"
	"log"
	"net/http"
	"path/filepath"
	"strconv"

	"github.com/shoal-dev/shoal/packcache"
)

// The HTTP front end's upload-pack handler: Open, then set Content-Length
// when the size is known (a hit), which lets net/http use sendfile, then
// Stream.
func Example() {
	cache, err := packcache.New(packcache.DefaultConfig("/var/cache/shoal/packs"))
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()
	http.HandleFunc("POST /{repo}/git-upload-pack", func(w http.ResponseWriter, r *http.Request) {
		repo := r.PathValue("repo")
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			gz, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = gz
		}
		resp, err := cache.Open(r.Context(), repo, filepath.Join("/srv/git", repo+".git"), r.Header.Get("Git-Protocol"), body)
		switch {
		case errors.Is(err, packcache.ErrMalformed):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer resp.Close()
		w.Header().Set("Content-Type", "application/x-git-upload-pack-result")
		if n, ok := resp.Size(); ok {
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		}
		if _, err := resp.Stream(r.Context(), w); err != nil {
			log.Printf("upload-pack %s (%v): %v", repo, resp.Result, err)
		}
	})
	// Before a push to repo may move a ref: p, err := cache.BeginPush(ctx,
	// repo) (an error: refuse the push); once git has exited: p.End(ctx).
	// On the bus's word that another node did: cache.Forget(repo).
	// Periodically: cache.Sweep(ctx).
}
