// Real text for haystacks and language modelling, from <shared>/data, and its train/held-out cut.
//
// Corpora (cleaned so that the model sees prose only):
//  - "tinystories": data/tinystories/tinystories_sample.txt without its "<|endoftext|>" separator
//    lines (stories are joined by a newline);
//  - "pg_essays": every data/pg_essays/*.txt in name order, joined by a blank line;
//  - "books": pg1342, pg2701, pg84 (in that order), each cut to the text between the Project
//    Gutenberg "*** START OF" and "*** END OF" lines, joined by a blank line;
//  - "shakespeare": data/books/tinyshakespeare.txt.
// The train part is the text before split_offset(), the held-out part the text from it on: the cut
// is at kTrainFraction of the bytes, moved forward to the next line start, so no line is shared.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "tasks/split.h"

namespace nammkit {

std::vector<std::string> corpus_names();
// Error("<where>: <name>: unknown text (known: ...)") unless `name` is one of corpus_names().
void check_corpus_name(const std::string& name, const std::string& where);
// The cleaned text of a corpus; Error "corpus: <name>: unknown ..." or naming a missing file.
std::string load_corpus(const std::string& name, const std::string& shared_dir);

size_t split_offset(std::string_view text);
// The part of `text` that belongs to `split` (All: everything).
std::string_view split_text(std::string_view text, Split split);

}  // namespace nammkit
