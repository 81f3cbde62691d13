#pragma once
/// CSV tables (RFC 4180 quoting) read through libcsv, optionally gzip-compressed (MIMIC ships
/// mimic-cxr-2.0.0-*.csv.gz), and written with the same quoting rules.
#include <cstddef>
#include <string>
#include <vector>

namespace afloc::data {

/// A CSV file as a header and rows of strings. Fields keep their spaces (SIIM's header
/// " EncodedPixels" has a leading one).
struct CsvTable {
  std::string path;  ///< where it was read from (for error messages)
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;

  /// Index of a column; Error naming the file, the column and the columns present when absent.
  size_t column(const std::string& name) const;
  /// Index of a column or npos when absent.
  size_t find_column(const std::string& name) const;
  /// Field of a row by column index ("" when the row is shorter than the header).
  const std::string& at(size_t row, size_t col) const;
};

/// Reads a CSV file (".gz" suffix: gzip). The first record is the header. Error naming the file
/// for an unreadable file, a malformed record (unterminated quote), or an empty file.
CsvTable read_csv(const std::string& path);
/// Parses CSV text; origin names it in errors.
CsvTable parse_csv(const std::string& text, const std::string& origin);

/// One field, quoted when it holds a comma, quote or line break.
std::string csv_field(const std::string& value);
/// A record: fields joined by commas, quoted when needed, with a trailing "\n".
std::string csv_row(const std::vector<std::string>& fields);

/// Reads a whole file, gunzipping it when the path ends in ".gz". Error naming the file.
std::string read_text_maybe_gz(const std::string& path);

}  // namespace afloc::data
