// Command govex answers OpenVEX questions with go-vex, the reference implementation that
// vexctl is built on, for the differential test tests/tools/test_vex_govex.py.
//
// It reads a request on standard input:
//
//	{"documents": ["a.json", "b.json"],
//	 "queries": [{"documents": [0, 1], "vulnerability": "CVE-2023-1234", "product": "pkg:oci/x"}]}
//
// opens every document with vex.Open (as vexctl does: OpenVEX v0.2.0, or v0.0.1 converted),
// and answers each query with the effective statement: for one document its
// EffectiveStatement, for several MergeDocuments, then EffectiveStatement. It writes
//
//	{"documents": [{"ok": true}, {"ok": false, "error": "..."}],
//	 "answers": [{"found": true, "document": 0, "statement": 3, "status": "fixed"}]}
//
// Statements are tagged with their position before go-vex sorts them, so that an answer
// names the statement as the document lists it. Products with subcomponents are dropped
// before matching: go-vex matches them for the product alone, while the operator reads them
// as a statement about the subcomponents only (a documented difference, not compared).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/openvex/go-vex/pkg/vex"
)

type query struct {
	Documents     []int  `json:"documents"`
	Vulnerability string `json:"vulnerability"`
	Product       string `json:"product"`
}

type request struct {
	Documents []string `json:"documents"`
	Queries   []query  `json:"queries"`
}

type opened struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

type answer struct {
	Found     bool   `json:"found"`
	Document  int    `json:"document"`
	Statement int    `json:"statement"`
	Status    string `json:"status,omitempty"`
	Error     string `json:"error,omitempty"`
}

type response struct {
	Documents []opened `json:"documents"`
	Answers   []answer `json:"answers"`
}

// load opens a document and tags each statement with "document:statement".
func load(path string, number int) (*vex.VEX, error) {
	doc, err := vex.Open(path)
	if err != nil {
		return nil, err
	}
	for i := range doc.Statements {
		doc.Statements[i].ID = fmt.Sprintf("%d:%d", number, i)
		kept := []vex.Product{}
		for _, product := range doc.Statements[i].Products {
			if len(product.Subcomponents) == 0 {
				kept = append(kept, product)
			}
		}
		doc.Statements[i].Products = kept
	}
	return doc, nil
}

func ask(path []string, q query) answer {
	docs := make([]*vex.VEX, 0, len(q.Documents))
	for _, number := range q.Documents {
		doc, err := load(path[number], number)
		if err != nil {
			return answer{Error: err.Error()}
		}
		docs = append(docs, doc)
	}
	doc := docs[0]
	if len(docs) > 1 {
		merged, err := vex.MergeDocuments(docs)
		if err != nil {
			return answer{Error: err.Error()}
		}
		doc = merged
	}
	statement := doc.EffectiveStatement(q.Product, q.Vulnerability)
	if statement == nil {
		return answer{}
	}
	parts := strings.SplitN(statement.ID, ":", 2)
	number, _ := strconv.Atoi(parts[0])
	index, _ := strconv.Atoi(parts[1])
	return answer{Found: true, Document: number, Statement: index, Status: string(statement.Status)}
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "reading the request:", err)
		os.Exit(2)
	}
	resp := response{Documents: []opened{}, Answers: []answer{}}
	for number, path := range req.Documents {
		if _, err := load(path, number); err != nil {
			resp.Documents = append(resp.Documents, opened{Error: err.Error()})
		} else {
			resp.Documents = append(resp.Documents, opened{OK: true})
		}
	}
	for _, q := range req.Queries {
		resp.Answers = append(resp.Answers, ask(req.Documents, q))
	}
	if err := json.NewEncoder(os.Stdout).Encode(resp); err != nil {
		fmt.Fprintln(os.Stderr, "writing the answers:", err)
		os.Exit(2)
	}
}
