// afloc-dicom: the helper process in which afloc decodes DICOM pixel data with GDCM (see
// data::read_dicom). Started by afloc itself with --serve; not meant to be run by hand.
#include <cstdio>
#include <cstring>

#include "afloc/data/dicom.h"

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--serve") == 0) return afloc::data::serve_dicom_helper();
  std::fprintf(stderr,
               "afloc-dicom: the helper process in which afloc decodes DICOM files with GDCM, so that a corrupt\n"
               "file cannot abort afloc itself. afloc starts it (afloc-dicom --serve) from the folder of its own\n"
               "program, or from $AFLOC_DICOM_HELPER.\n");
  return 2;
}
