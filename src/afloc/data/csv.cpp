#include "afloc/data/csv.h"

#include <csv.h>
#include <zlib.h>

#include "afloc/common/error.h"

namespace afloc::data {
namespace {

struct ParseState {
  std::vector<std::string> record;
  std::vector<std::vector<std::string>> records;
};

void on_field(void* data, size_t len, void* state) {
  static_cast<ParseState*>(state)->record.emplace_back(static_cast<const char*>(data), len);
}

void on_record(int /*terminator*/, void* state) {
  auto* s = static_cast<ParseState*>(state);
  s->records.push_back(std::move(s->record));
  s->record.clear();
}

// libcsv trims spaces and tabs around unquoted fields by default; public CSVs (SIIM's
// " EncodedPixels") carry meaningful spaces, so nothing is trimmed.
int no_space(unsigned char) { return 0; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

size_t CsvTable::find_column(const std::string& name) const {
  for (size_t i = 0; i < header.size(); ++i) {
    if (header[i] == name) return i;
  }
  return std::string::npos;
}

size_t CsvTable::column(const std::string& name) const {
  const size_t i = find_column(name);
  if (i == std::string::npos) {
    std::string have;
    for (const auto& h : header) have += (have.empty() ? "" : ", ") + ("'" + h + "'");
    throw Error(path + ": missing column '" + name + "' (columns: " + have + ")");
  }
  return i;
}

const std::string& CsvTable::at(size_t row, size_t col) const {
  static const std::string kEmpty;
  const auto& r = rows.at(row);
  return col < r.size() ? r[col] : kEmpty;
}

std::string read_text_maybe_gz(const std::string& path) {
  if (!ends_with(path, ".gz")) return read_file(path);
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw Error(path + ": cannot open");
  std::string out;
  char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  int err = 0;
  const char* msg = gzerror(f, &err);
  const std::string what = msg ? msg : "";
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END)) throw Error(path + ": gzip read error (" + what + ")");
  return out;
}

CsvTable parse_csv(const std::string& text, const std::string& origin) {
  csv_parser p{};
  if (csv_init(&p, CSV_STRICT | CSV_STRICT_FINI) != 0) throw Error(origin + ": cannot initialise the CSV parser");
  csv_set_space_func(&p, no_space);
  ParseState st;
  size_t offset = 0;
  // Skip a UTF-8 byte-order mark (Excel writes one).
  if (text.size() >= 3 && text.compare(0, 3, "\xEF\xBB\xBF") == 0) offset = 3;
  const size_t n = text.size() - offset;
  if (csv_parse(&p, text.data() + offset, n, on_field, on_record, &st) != n ||
      csv_fini(&p, on_field, on_record, &st) != 0) {
    const std::string why = csv_strerror(csv_error(&p));
    // The record count tells the user where to look.
    const std::string where = "record " + std::to_string(st.records.size() + 1);
    csv_free(&p);
    throw Error(origin + ": malformed CSV at " + where + " (" + why + ")");
  }
  csv_free(&p);
  if (st.records.empty()) throw Error(origin + ": empty CSV (no header)");
  CsvTable t;
  t.path = origin;
  t.header = std::move(st.records.front());
  t.rows.assign(std::make_move_iterator(st.records.begin() + 1), std::make_move_iterator(st.records.end()));
  return t;
}

CsvTable read_csv(const std::string& path) { return parse_csv(read_text_maybe_gz(path), path); }

std::string csv_field(const std::string& value) {
  // Spaces are kept as they are: readers that do not trim (SIIM's " EncodedPixels") see them.
  if (value.find_first_of(",\"\r\n") == std::string::npos) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string csv_row(const std::vector<std::string>& fields) {
  std::string out;
  for (size_t i = 0; i < fields.size(); ++i) {
    if (i) out += ',';
    out += csv_field(fields[i]);
  }
  return out + "\n";
}

}  // namespace afloc::data
