// A restricted pickle reader for torch.save archives. Hand-written because nothing on Debian reads
// a pickle without executing it: LibTorch's own unpickler (torch::pickle_load) refuses classes it
// does not know, which every PyTorch Lightning checkpoint contains (callbacks, OmegaConf configs).
// Only data-building opcodes are interpreted; globals other than torch's tensor/storage rebuilders
// and OrderedDict become inert placeholders, and calling or building one just records it.
#include "afloc/io/torch_checkpoint.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <memory>
#include <set>
#include <variant>

#include "afloc/common/error.h"

namespace afloc::io {
namespace {

struct Value;
using ValuePtr = std::shared_ptr<Value>;

struct Value {
  enum class Kind { kNone, kBool, kInt, kFloat, kString, kBytes, kTuple, kList, kDict, kGlobal, kObject, kStorage, kTensor, kMark };
  Kind kind = Kind::kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;                                        // string / bytes / global name / storage key
  std::vector<ValuePtr> items;                          // tuple / list / object args
  std::vector<std::pair<ValuePtr, ValuePtr>> entries;   // dict (insertion order)
  torch::ScalarType dtype = torch::kFloat;              // storage
  torch::Tensor tensor;
};

ValuePtr make(Value::Kind k) {
  auto v = std::make_shared<Value>();
  v->kind = k;
  return v;
}

torch::ScalarType storage_dtype(const std::string& name) {
  static const std::map<std::string, torch::ScalarType> kTypes = {
      {"torch.FloatStorage", torch::kFloat},   {"torch.DoubleStorage", torch::kDouble},
      {"torch.HalfStorage", torch::kHalf},     {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kLong},     {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort},   {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},     {"torch.BoolStorage", torch::kBool}};
  const auto it = kTypes.find(name);
  if (it == kTypes.end()) throw Error("unsupported storage type " + name);
  return it->second;
}

class Unpickler {
 public:
  Unpickler(const std::string& data, caffe2::serialize::PyTorchStreamReader& zip, std::string origin)
      : d_(data), zip_(zip), origin_(std::move(origin)) {}

  ValuePtr run() {
    while (true) {
      if (p_ >= d_.size()) fail("pickle ends without STOP");
      const auto op = static_cast<unsigned char>(d_[p_++]);
      switch (op) {
        case 0x80: p_ += 1; break;                      // PROTO
        case 0x95: p_ += 8; break;                      // FRAME
        case '.': return pop();                         // STOP
        case '(': push(make(Value::Kind::kMark)); break;  // MARK
        case '0': pop(); break;                         // POP
        case '1': pop_mark(); break;                    // POP_MARK
        case '2': push(top()); break;                   // DUP
        case 'N': push(make(Value::Kind::kNone)); break;
        case 0x88: push_bool(true); break;              // NEWTRUE
        case 0x89: push_bool(false); break;             // NEWFALSE
        case 'J': push_int(static_cast<int32_t>(read_u32())); break;  // BININT
        case 'K': push_int(read_u8()); break;           // BININT1
        case 'M': push_int(read_u16()); break;          // BININT2
        case 0x8a: {                                    // LONG1
          const size_t n = read_u8();
          int64_t v = 0;
          for (size_t k = 0; k < n && k < 8; ++k) v |= static_cast<int64_t>(static_cast<unsigned char>(need(1)[k])) << (8 * k);
          if (n > 0 && n < 8 && (static_cast<unsigned char>(d_[p_ + n - 1]) & 0x80)) v -= int64_t{1} << (8 * n);
          p_ += n;
          push_int(v);
          break;
        }
        case 'G': {                                     // BINFLOAT (big endian)
          uint64_t u = 0;
          const char* b = need(8);
          for (int k = 0; k < 8; ++k) u = (u << 8) | static_cast<unsigned char>(b[k]);
          p_ += 8;
          double v;
          std::memcpy(&v, &u, 8);
          auto x = make(Value::Kind::kFloat);
          x->f = v;
          push(x);
          break;
        }
        case 'X': push_str(Value::Kind::kString, read_u32()); break;  // BINUNICODE
        case 0x8c: push_str(Value::Kind::kString, read_u8()); break;  // SHORT_BINUNICODE
        case 0x8d: push_str(Value::Kind::kString, read_u64()); break; // BINUNICODE8
        case 'T': push_str(Value::Kind::kBytes, read_u32()); break;   // BINSTRING
        case 'U': push_str(Value::Kind::kBytes, read_u8()); break;    // SHORT_BINSTRING
        case 'B': push_str(Value::Kind::kBytes, read_u32()); break;   // BINBYTES
        case 'C': push_str(Value::Kind::kBytes, read_u8()); break;    // SHORT_BINBYTES
        case 'q': memo_[read_u8()] = top(); break;       // BINPUT
        case 'r': memo_[read_u32()] = top(); break;      // LONG_BINPUT
        case 0x94: memo_[memo_.size()] = top(); break;   // MEMOIZE
        case 'h': push(memo(read_u8())); break;          // BINGET
        case 'j': push(memo(read_u32())); break;         // LONG_BINGET
        case '}': push(make(Value::Kind::kDict)); break; // EMPTY_DICT
        case ']': push(make(Value::Kind::kList)); break; // EMPTY_LIST
        case ')': push(make(Value::Kind::kTuple)); break; // EMPTY_TUPLE
        case 0x8f: push(make(Value::Kind::kList)); break; // EMPTY_SET (kept as a list)
        case 0x85: tuple_of(1); break;                   // TUPLE1
        case 0x86: tuple_of(2); break;                   // TUPLE2
        case 0x87: tuple_of(3); break;                   // TUPLE3
        case 't': {                                      // TUPLE
          auto t = make(Value::Kind::kTuple);
          t->items = pop_mark();
          push(t);
          break;
        }
        case 'l': {                                      // LIST
          auto l = make(Value::Kind::kList);
          l->items = pop_mark();
          push(l);
          break;
        }
        case 'd': {                                      // DICT
          auto dict = make(Value::Kind::kDict);
          const auto items = pop_mark();
          for (size_t k = 0; k + 1 < items.size(); k += 2) dict->entries.emplace_back(items[k], items[k + 1]);
          push(dict);
          break;
        }
        case 'a': {                                      // APPEND
          auto v = pop();
          top()->items.push_back(v);
          break;
        }
        case 'e': case 0x90: {                           // APPENDS, ADDITEMS
          auto items = pop_mark();
          auto& target = top()->items;
          target.insert(target.end(), items.begin(), items.end());
          break;
        }
        case 's': {                                      // SETITEM
          auto v = pop();
          auto k = pop();
          set_item(top(), k, v);
          break;
        }
        case 'u': {                                      // SETITEMS
          auto items = pop_mark();
          for (size_t k = 0; k + 1 < items.size(); k += 2) set_item(top(), items[k], items[k + 1]);
          break;
        }
        case 'c': {                                      // GLOBAL "module\nname\n"
          const std::string module = read_line(), name = read_line();
          push_global(module + "." + name);
          break;
        }
        case 0x93: {                                     // STACK_GLOBAL
          auto name = pop();
          auto module = pop();
          push_global(module->s + "." + name->s);
          break;
        }
        case 'R': {                                      // REDUCE
          auto args = pop();
          auto callable = pop();
          push(call(callable, args));
          break;
        }
        case 0x81: {                                     // NEWOBJ
          auto args = pop();
          auto cls = pop();
          push(opaque(cls->s, args));
          break;
        }
        case 0x92: {                                     // NEWOBJ_EX
          pop();
          auto args = pop();
          auto cls = pop();
          push(opaque(cls->s, args));
          break;
        }
        case 'b': pop(); break;                          // BUILD: state is dropped (objects stay inert)
        case 'Q': push(persistent(pop())); break;        // BINPERSID
        default: {
          char buf[16];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + buf);
        }
      }
    }
  }

  std::set<std::string> foreign;

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw Error(origin_ + ": " + why + " at pickle offset " + std::to_string(p_));
  }
  const char* need(size_t n) const {
    if (p_ + n > d_.size()) fail("truncated pickle");
    return d_.data() + p_;
  }
  uint64_t read_le(size_t n) {
    const char* b = need(n);
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<unsigned char>(b[k])) << (8 * k);
    p_ += n;
    return v;
  }
  uint64_t read_u8() { return read_le(1); }
  uint64_t read_u16() { return read_le(2); }
  uint64_t read_u32() { return read_le(4); }
  uint64_t read_u64() { return read_le(8); }
  std::string read_line() {
    const size_t e = d_.find('\n', p_);
    if (e == std::string::npos) fail("unterminated GLOBAL");
    std::string s = d_.substr(p_, e - p_);
    p_ = e + 1;
    return s;
  }
  void push(ValuePtr v) { stack_.push_back(std::move(v)); }
  ValuePtr pop() {
    if (stack_.empty()) fail("stack underflow");
    auto v = stack_.back();
    stack_.pop_back();
    return v;
  }
  ValuePtr top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<ValuePtr> pop_mark() {
    std::vector<ValuePtr> items;
    while (true) {
      auto v = pop();
      if (v->kind == Value::Kind::kMark) break;
      items.push_back(v);
    }
    return {items.rbegin(), items.rend()};
  }
  ValuePtr memo(uint64_t k) {
    const auto it = memo_.find(k);
    if (it == memo_.end()) fail("memo key " + std::to_string(k) + " missing");
    return it->second;
  }
  void push_bool(bool b) {
    auto v = make(Value::Kind::kBool);
    v->i = b;
    push(v);
  }
  void push_int(int64_t i) {
    auto v = make(Value::Kind::kInt);
    v->i = i;
    push(v);
  }
  void push_str(Value::Kind k, uint64_t n) {
    auto v = make(k);
    v->s.assign(need(n), n);
    p_ += n;
    push(v);
  }
  void tuple_of(size_t n) {
    auto t = make(Value::Kind::kTuple);
    t->items.resize(n);
    for (size_t k = n; k-- > 0;) t->items[k] = pop();
    push(t);
  }
  void set_item(const ValuePtr& dict, const ValuePtr& k, const ValuePtr& v) {
    if (dict->kind != Value::Kind::kDict) return;  // __setstate__ dicts of opaque objects: ignored
    dict->entries.emplace_back(k, v);
  }
  void push_global(const std::string& name) {
    // Reported: every class or function the file names that is neither torch's own rebuilding
    // machinery nor a Python builtin (all of them stay inert placeholders).
    const bool known = name == "collections.OrderedDict" || name.rfind("torch._utils.", 0) == 0 ||
                       name.rfind("torch.jit._pickle.", 0) == 0 ||
                       (name.rfind("torch.", 0) == 0 && name.size() > 7 && name.find("Storage") != std::string::npos) ||
                       name.rfind("__builtin__.", 0) == 0 || name.rfind("builtins.", 0) == 0 ||
                       name.rfind("copyreg.", 0) == 0 || name.rfind("copy_reg.", 0) == 0;
    if (!known) foreign.insert(name);
    auto g = make(Value::Kind::kGlobal);
    g->s = name;
    push(g);
  }
  ValuePtr opaque(const std::string& name, const ValuePtr& args) {
    auto o = make(Value::Kind::kObject);
    o->s = name;
    if (args) o->items = args->items;
    return o;
  }
  ValuePtr call(const ValuePtr& callable, const ValuePtr& args) {
    const std::string& name = callable->s;
    if (callable->kind == Value::Kind::kGlobal) {
      if (name == "collections.OrderedDict" || name == "__builtin__.dict" || name == "builtins.dict") {
        auto d = make(Value::Kind::kDict);
        return d;
      }
      if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") return rebuild_tensor(args);
      if (name == "torch._utils._rebuild_parameter" && !args->items.empty()) return args->items[0];
      // LibTorch's own pickler (torch::pickle_save) tags containers: restore_type_tag(value, type),
      // build_intlist(list), ...: the value is the first argument.
      if (name.rfind("torch.jit._pickle.", 0) == 0 && !args->items.empty()) return args->items[0];
    }
    return opaque(callable->kind == Value::Kind::kGlobal ? name : "<call>", args);
  }
  ValuePtr persistent(const ValuePtr& pid) {
    // ('storage', storage_type, key, location, numel)
    if (pid->kind != Value::Kind::kTuple || pid->items.size() < 5 || pid->items[0]->s != "storage") {
      fail("unsupported persistent id");
    }
    auto st = make(Value::Kind::kStorage);
    st->dtype = storage_dtype(pid->items[1]->s);
    st->s = pid->items[2]->s;
    st->i = pid->items[4]->i;  // numel
    return st;
  }
  ValuePtr rebuild_tensor(const ValuePtr& args) {
    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (args->items.size() < 4 || args->items[0]->kind != Value::Kind::kStorage) fail("malformed _rebuild_tensor_v2 call");
    const ValuePtr st = args->items[0];
    const int64_t offset = args->items[1]->i;
    std::vector<int64_t> size, stride;
    for (const auto& v : args->items[2]->items) size.push_back(v->i);
    for (const auto& v : args->items[3]->items) stride.push_back(v->i);
    torch::Tensor storage = load_storage(st);
    int64_t needed = 1;  // elements the view reaches
    for (size_t k = 0; k < size.size(); ++k) {
      if (size[k] == 0) needed = 0;
      else if (needed > 0) needed += (size[k] - 1) * stride[k];
    }
    if (needed > 0 && offset + needed > storage.numel()) fail("tensor view exceeds storage " + st->s);
    auto out = make(Value::Kind::kTensor);
    out->tensor = storage.as_strided(size, stride, offset).clone();
    return out;
  }
  torch::Tensor load_storage(const ValuePtr& st) {
    const auto it = storages_.find(st->s);
    if (it != storages_.end()) return it->second;
    const std::string record = "data/" + st->s;
    if (!zip_.hasRecord(record)) fail("storage record " + record + " missing from the archive");
    auto [ptr, bytes] = zip_.getRecord(record);
    const size_t elem = c10::elementSize(st->dtype);
    if (bytes < static_cast<size_t>(st->i) * elem) fail("storage record " + record + " shorter than its " + std::to_string(st->i) + " elements");
    torch::Tensor t = torch::empty({st->i}, torch::TensorOptions().dtype(st->dtype));
    std::memcpy(t.data_ptr(), ptr.get(), static_cast<size_t>(st->i) * elem);
    storages_[st->s] = t;
    return t;
  }

  const std::string& d_;
  caffe2::serialize::PyTorchStreamReader& zip_;
  std::string origin_;
  size_t p_ = 0;
  std::vector<ValuePtr> stack_;
  std::map<uint64_t, ValuePtr> memo_;
  std::map<std::string, torch::Tensor> storages_;
};

void collect(const ValuePtr& v, const std::string& path, TensorMap& out, int depth) {
  if (depth > 64) return;
  if (v->kind == Value::Kind::kTensor) {
    out[path] = v->tensor;
  } else if (v->kind == Value::Kind::kDict) {
    for (const auto& [k, x] : v->entries) {
      std::string key;
      if (k->kind == Value::Kind::kString) key = k->s;
      else if (k->kind == Value::Kind::kInt) key = std::to_string(k->i);
      else continue;
      collect(x, path.empty() ? key : path + "." + key, out, depth + 1);
    }
  } else if (v->kind == Value::Kind::kList || v->kind == Value::Kind::kTuple) {
    for (size_t k = 0; k < v->items.size(); ++k) collect(v->items[k], path + "." + std::to_string(k), out, depth + 1);
  }
}

}  // namespace

CheckpointContents read_torch_checkpoint(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
  } catch (const c10::Error& e) {
    throw Error(path + ": not a torch.save zip archive (" + std::string(e.what_without_backtrace()).substr(0, 200) + ")");
  }
  if (!zip->hasRecord("data.pkl")) throw Error(path + ": torch zip without data.pkl (a TorchScript file?)");
  auto [ptr, bytes] = zip->getRecord("data.pkl");
  const std::string pickle(static_cast<const char*>(ptr.get()), bytes);
  Unpickler u(pickle, *zip, path);
  const ValuePtr root = u.run();
  CheckpointContents c;
  collect(root, "", c.tensors, 0);
  if (root->kind == Value::Kind::kDict) {
    for (const auto& [k, v] : root->entries)
      if (k->kind == Value::Kind::kString) c.top_level.push_back(k->s);
  }
  c.foreign.assign(u.foreign.begin(), u.foreign.end());
  return c;
}

}  // namespace afloc::io
