//go:build ignore

// funcsize prints the largest functions of the module's non-test Go files by
// line count, with their cyclomatic complexity (1 + branches), and the size of
// one package directory. Usage:
//
//	go run scripts/funcsize.go [-n 10] [-pkg internal/server]
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type fn struct {
	name  string
	pos   string
	lines int
	cyclo int
}

func cyclo(body ast.Node) int {
	c := 1
	ast.Inspect(body, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.IfStmt, *ast.ForStmt, *ast.RangeStmt:
			c++
		case *ast.CaseClause:
			if x.List != nil {
				c++
			}
		case *ast.CommClause:
			if x.Comm != nil {
				c++
			}
		case *ast.BinaryExpr:
			if x.Op == token.LAND || x.Op == token.LOR {
				c++
			}
		}
		return true
	})
	return c
}

func main() {
	n := flag.Int("n", 10, "how many functions")
	pkg := flag.String("pkg", "internal/server", "package directory to size")
	flag.Parse()
	fset := token.NewFileSet()
	var fns []fn
	var pkgFiles, pkgTestFiles, pkgLines, pkgMethods, pkgFuncs int
	filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && path != "." || d.Name() == "scripts") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		isTest := strings.HasSuffix(path, "_test.go")
		if filepath.Dir(path) == filepath.Clean(*pkg) {
			if isTest {
				pkgTestFiles++
			} else {
				pkgFiles++
				pkgLines += strings.Count(string(src), "\n")
			}
		}
		if isTest {
			return nil
		}
		f, err := parser.ParseFile(fset, path, src, 0)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			fd, ok := decl.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			name := fd.Name.Name
			if fd.Recv != nil && len(fd.Recv.List) > 0 {
				t := fd.Recv.List[0].Type
				if s, ok := t.(*ast.StarExpr); ok {
					t = s.X
				}
				if ix, ok := t.(*ast.IndexExpr); ok {
					t = ix.X
				}
				if id, ok := t.(*ast.Ident); ok {
					name = id.Name + "." + name
				}
			}
			if filepath.Dir(path) == filepath.Clean(*pkg) {
				if fd.Recv != nil {
					pkgMethods++
				} else {
					pkgFuncs++
				}
			}
			start := fset.Position(fd.Pos())
			end := fset.Position(fd.End())
			fns = append(fns, fn{name, fmt.Sprintf("%s:%d", path, start.Line), end.Line - start.Line + 1, cyclo(fd.Body)})
		}
		return nil
	})
	sort.Slice(fns, func(i, j int) bool { return fns[i].lines > fns[j].lines })
	fmt.Printf("largest functions (lines, cyclomatic):\n")
	for i := 0; i < *n && i < len(fns); i++ {
		fmt.Printf("  %4d  %3d  %-40s %s\n", fns[i].lines, fns[i].cyclo, fns[i].name, fns[i].pos)
	}
	sort.Slice(fns, func(i, j int) bool { return fns[i].cyclo > fns[j].cyclo })
	fmt.Printf("most complex functions (cyclomatic, lines):\n")
	for i := 0; i < *n && i < len(fns); i++ {
		fmt.Printf("  %4d  %3d  %-40s %s\n", fns[i].cyclo, fns[i].lines, fns[i].name, fns[i].pos)
	}
	fmt.Printf("%s: %d files (+%d test files), %d lines, %d methods, %d functions\n", *pkg, pkgFiles, pkgTestFiles, pkgLines, pkgMethods, pkgFuncs)
}
