#include "afloc/infer/prompt_bank.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "afloc/common/error.h"
#include "afloc/common/strings.h"
#include "afloc/data/phantom.h"

namespace afloc::infer {
namespace {

struct CxrEntry {
  std::vector<std::string> severity, subtype, location;
};

// The authors' table (classification/prompts.py, _get_xray_text_promtps), verbatim including its
// spellings ("presistent", "uppper", "apperance of") and the repeated effusion subtype: the
// averaged prompt embedding, hence every score, depends on them.
const std::map<std::string, CxrEntry>& cxr_table() {
  static const std::map<std::string, CxrEntry> t = {
      {"atelectasis",
       {{"", "mild", "minimal"},
        {"subsegmental atelectasis", "linear atelectasis", "trace atelectasis", "bibasilar atelectasis",
         "retrocardiac atelectasis", "bandlike atelectasis", "residual atelectasis"},
        {"at the mid lung zone", "at the upper lung zone", "at the right lung zone", "at the left lung zone",
         "at the lung bases", "at the right lung base", "at the left lung base", "at the bilateral lung bases",
         "at the left lower lobe", "at the right lower lobe"}}},
      {"cardiomegaly",
       {{""},
        {"cardiac silhouette size is upper limits of normal", "cardiomegaly which is unchanged",
         "mildly prominent cardiac silhouette", "portable view of the chest demonstrates stable cardiomegaly",
         "portable view of the chest demonstrates mild cardiomegaly", "persistent severe cardiomegaly",
         "heart size is borderline enlarged", "cardiomegaly unchanged", "heart size is at the upper limits of normal",
         "redemonstration of cardiomegaly",
         "ap erect chest radiograph demonstrates the heart size is the upper limits of normal",
         "cardiac silhouette size is mildly enlarged",
         "mildly enlarged cardiac silhouette, likely left ventricular enlargement. other chambers are less prominent",
         "heart size remains at mildly enlarged", "persistent cardiomegaly with prominent upper lobe vessels"},
        {""}}},
      {"consolidation",
       {{"", "increased", "improved", "apperance of"},
        {"bilateral consolidation", "reticular consolidation", "retrocardiac consolidation", "patchy consolidation",
         "airspace consolidation", "partial consolidation"},
        {"at the lower lung zone", "at the upper lung zone", "at the left lower lobe", "at the right lower lobe",
         "at the left upper lobe", "at the right uppper lobe", "at the right lung base", "at the left lung base"}}},
      {"edema", {{"mild", "presistent", "moderate"}, {"pulmonary edema"}, {""}}},
      {"effusion",
       {{"small", "stable", "large", "decreased", "increased"},
        {"bilateral pleural effusion", "subpulmonic pleural effusion", "bilateral pleural effusion"},
        {"left", "right", "tiny"}}},
      {"pneumonia",
       {{"", "mild", "moderate", "severe", "improved", "worsening"},
        {"pneumonia"},
        {"at the right lower lobe", "at the left lower lobe", "at the right upper lobe", "at the left upper lobe",
         "at the middle lobe", "at the lung bases", "at the bilateral lungs", "at the right lung", "at the left lung"}}},
      {"pneumothorax",
       {{"", "small", "large", "increased", "stable", "resolving"},
        {"pneumothorax"},
        {"right", "left", "bilateral", "at the apex", "at the upper lung zone", "at the mid lung zone",
         "at the lower lung zone"}}},
      {"infiltration",
       {{""}, {"diffuse infiltration", "patchy infiltration", "lobar infiltration", "interstitial infiltration"}, {""}}},
      {"mass",
       {{"small", "medium", "large"},
        {"solitary mass", "multiple masses", "well-circumscribed mass", "spiculated mass"},
        {"at the right upper lobe", "at the left upper lobe", "at the right lower lobe", "at the left lower lobe",
         "mediastinal"}}},
      {"nodule",
       {{"tiny", "small", "large"},
        {""},
        {"at the right upper lobe", "at the left upper lobe", "at the right lower lobe", "at the left lower lobe",
         "peripheral", "central"}}},
      {"emphysema",
       {{"mild", "moderate", "severe"},
        {"centrilobular emphysema", "panlobular emphysema", "paraseptal emphysema", "bullous emphysema"},
        {"upper zones", "lower zones", "diffuse"}}},
      {"fibrosis",
       {{"mild", "moderate", "severe"},
        {"reticular fibrosis", "honeycombing", "traction bronchiectasis"},
        {"upper zones", "lower zones", "diffuse"}}},
      {"pleural thickening",
       {{"mild", "moderate", "severe"},
        {"diffuse pleural thickening", "localized pleural thickening"},
        {"apical", "basal", "medial", "lateral", "right", "left"}}},
      {"hernia",
       {{"mild", "moderate", "severe"},
        {"hiatal hernia", "diaphragmatic hernia", "parahiatal hernia"},
        {"right", "left", "central"}}},
      {"fracture",
       {{"", "mild", "moderate", "severe"},
        {"rib fracture", "vertebral fracture", "clavicle fracture", "scapula fracture"},
        {"right", "left", "central"}}},
      {"pleural effusion",
       {{"", "small", "moderate", "large"},
        {"bilateral pleural effusion", "right pleural effusion", "left pleural effusion"},
        {"right", "left", "bilateral"}}},
      {"pleural other",
       {{"mild", "moderate", "severe"},
        {"pleural calcification", "pleural plaques", "pleural cyst", "fibrothorax"},
        {"apical", "basal", "medial", "lateral", "right", "left", "diffuse"}}},
      {"enlarged cardiomediastinum",
       {{"mild", "moderate", "severe"},
        {"aortic aneurysm", "mediastinal mass", "pericardial effusion", "cardiac enlargement"},
        {"anterior", "middle", "posterior", "superior", "inferior"}}},
      {"airspace opacity",
       {{"mild", "moderate", "severe"},
        {"consolidation", "ground-glass opacity", "atelectasis", "alveolar hemorrhage", "pulmonary edema"},
        {"upper lobe", "middle lobe", "lower lobe", "perihilar", "peripheral", "right lung", "left lung", "bilateral"}}},
      {"calcification of the aorta",
       {{"mild", "moderate", "severe"},
        {"intimal calcification", "medial calcification", "perivascular calcification", "diffuse calcification",
         "focal calcification"},
        {"ascending aorta", "descending aorta", "aortic arch", "abdominal aorta"}}},
      {"lung lesion",
       {{"small", "medium", "large"},
        {"solitary lesion", "multiple lesions", "nodular lesion", "mass-like lesion", "cystic lesion"},
        {"right upper lobe", "left upper lobe", "right lower lobe", "left lower lobe", "right lung base",
         "left lung base", "bilateral lung bases"}}},
      {"lung opacity",
       {{"mild", "moderate", "severe"},
        {"consolidation", "ground-glass opacity", "infiltrate", "airspace opacity", "reticulonodular opacity"},
        {"right lung", "left lung", "bilateral lungs", "upper lobes", "lower lobes"}}},
      {"normal", {{""}, {"no abnormalities detected", "normal findings", "unremarkable study"}, {""}}},
      {"pneumomediastinum",
       {{""},
        {"presence of free air in the mediastinum", "mild pneumomediastinum", "severe pneumomediastinum"},
        {"anterior mediastinum", "posterior mediastinum", "superior mediastinum"}}},
      {"pneumoperitoneum",
       {{""},
        {"gas under diaphragm", "perforation of hollow viscus", "post-surgical pneumoperitoneum"},
        {"free air in the abdomen", "abdominal cavity"}}},
      {"subcutaneous emphysema",
       {{"mild", "moderate", "severe"},
        {"localized subcutaneous emphysema", "extensive subcutaneous emphysema", "diffuse subcutaneous emphysema"},
        {"neck", "chest wall", "abdomen", "upper limbs", "lower limbs"}}},
      {"support devices",
       {{""},
        {"endotracheal tube", "central venous catheter", "pacemaker", "internal defibrillator", "ventilator",
         "external fixator"},
        {"chest", "neck", "abdomen", "extremities"}}},
      {"tortuous aorta",
       {{"mild", "moderate", "severe"},
        {"ascending aorta tortuosity", "descending aorta tortuosity", "aortic arch tortuosity"},
        {"aortic arch", "ascending aorta", "descending aorta"}}},
      {"bulla",
       {{"small", "medium", "large"},
        {"apical bulla", "subpleural bulla", "bullous emphysema", "paraseptal bulla"},
        {"right lung", "left lung", "upper lobes", "lower lobes", "bilateral lungs"}}},
      {"cardiomyopathy",
       {{"mild", "moderate", "severe"},
        {"dilated cardiomyopathy", "hypertrophic cardiomyopathy", "restrictive cardiomyopathy",
         "arrhythmogenic right ventricular cardiomyopathy"},
        {"left ventricle", "right ventricle", "bilateral ventricles"}}},
      {"hilum", {{""}, {"enlarged hilum", "abnormal hilum", "normal hilum"}, {"left hilum", "right hilum", "bilateral hilar"}}},
      {"osteopenia",
       {{"mild", "moderate", "severe"}, {"generalized osteopenia", "localized osteopenia"}, {"spine", "hips", "wrists", "ankles"}}},
      {"scoliosis",
       {{""}, {"idiopathic scoliosis", "congenital scoliosis", "neuromuscular scoliosis", "degenerative scoliosis"}, {""}}},
  };
  return t;
}

struct TemplateDataset {
  std::string modality, template_;
  std::vector<std::pair<std::string, std::string>> classnames;  // label -> phrase, in the dataset's order
};

// Pathology: the authors' label2cap (prompts.py). Their negative is always "no {label}. " (the
// DHMCLUAD neg_templates entry is never read). Fundus: ours, in the same style, for the public
// grading sets (diabetic retinopathy ICDR grades, glaucoma, AMD); not from the authors.
const std::map<std::string, TemplateDataset>& template_table() {
  static const std::map<std::string, TemplateDataset> t = {
      {"sicapv2",
       {"pathology",
        "presence of CLASSNAME.",
        {{"NC", "benign prostate glands"},
         {"G3", "prostate cancer, gleason pattern 3"},
         {"G4", "gleason grade 4"},
         {"G5", "prostate cancer, gleason grade 5"},
         {"Tumor", "prostate cancer"}}}},
      {"wsss4luad3",
       {"pathology",
        "CLASSNAME is present.",
        {{"normal", "non-tumor"}, {"stroma", "tumor-associated stromal tissue"}, {"tumor", "invasive carcinoma"}}}},
      {"dhmcluad",
       {"pathology",
        "a histopathological photograph of CLASSNAME.",
        {{"papillary", "lung adenocarcinoma, papillary growth pattern"},
         {"solid", "lung adenocarcinoma with a predominantly solid growth pattern"},
         {"micropapillary", "micropapillary pattern adenocarcinoma of the lung"},
         {"acinar", "lung adenocarcinoma, acinar predominant histological subtype"},
         {"lepidic", "lepidic pattern adenocarcinoma of the lung"}}}},
      {"fundus-dr",
       {"fundus",
        "a retinal fundus photograph showing CLASSNAME.",
        {{"0", "no diabetic retinopathy"},
         {"1", "mild non-proliferative diabetic retinopathy"},
         {"2", "moderate non-proliferative diabetic retinopathy"},
         {"3", "severe non-proliferative diabetic retinopathy"},
         {"4", "proliferative diabetic retinopathy"}}}},
      {"fundus-glaucoma",
       {"fundus",
        "a retinal fundus photograph showing CLASSNAME.",
        {{"normal", "a healthy optic disc"}, {"glaucoma", "glaucomatous optic disc cupping"}}}},
      {"fundus-amd",
       {"fundus",
        "a retinal fundus photograph showing CLASSNAME.",
        {{"normal", "a normal macula"}, {"amd", "age-related macular degeneration with drusen"}}}},
  };
  return t;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) s.replace(p, from.size(), to);
  return s;
}

std::vector<std::string> known_datasets() {
  std::vector<std::string> out;
  for (const auto& [k, v] : template_table()) out.push_back(k);
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::vector<std::string> string_list(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array()) throw Error(where + ": expected an array of strings, got " + j.dump());
  std::vector<std::string> out;
  for (const auto& v : j) {
    if (!v.is_string()) throw Error(where + ": prompt " + v.dump() + " is not a string");
    out.push_back(v.get<std::string>());
  }
  return out;
}

}  // namespace

ClassPrompts cxr_class_prompts(const std::string& category) {
  ClassPrompts c;
  c.name = category;
  const std::string key = ascii_lower(category);
  const auto it = cxr_table().find(key);
  if (it != cxr_table().end()) {
    for (const auto& sev : it->second.severity)
      for (const auto& sub : it->second.subtype)
        for (const auto& loc : it->second.location) c.pos.push_back(category + ":" + sev + " " + sub + " " + loc);
    c.neg = {"no " + category + ". "};
  } else if (key == "no finding") {
    c.pos = {"No finding"};
    c.neg = {"finding"};
  } else {
    c.pos = {"Findings suggesting " + key};
    c.neg = {"no " + category + ". "};
  }
  return c;
}

std::vector<ClassPrompts> template_class_prompts(const std::string& dataset) {
  const auto it = template_table().find(ascii_lower(dataset));
  if (it == template_table().end())
    throw Error("prompt templates: unknown dataset '" + dataset + "' (known: " + join(known_datasets()) + ")");
  std::vector<ClassPrompts> out;
  for (const auto& [label, phrase] : it->second.classnames)
    out.push_back({label, {replace_all(it->second.template_, "CLASSNAME", phrase)}, {"no " + label + ". "}});
  return out;
}

PromptBank cxr_bank(const std::vector<std::string>& categories, ClassifyMode mode) {
  PromptBank b;
  b.name = "chest x-ray";
  b.modality = "chest x-ray";
  b.mode = mode;
  for (const auto& c : categories) b.classes.push_back(cxr_class_prompts(c));
  return b;
}

std::vector<std::string> builtin_bank_names() {
  return {"chexpert5", "nih14", "chexlocalize10", "siim", "rsna", "phantom",
          "sicapv2", "wsss4luad3", "dhmcluad", "fundus-dr", "fundus-glaucoma", "fundus-amd"};
}

PromptBank builtin_bank(const std::string& name) {
  const std::string key = ascii_lower(name);
  PromptBank b;
  if (key == "chexpert5") {
    b = cxr_bank({"Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"});
  } else if (key == "nih14") {
    b = cxr_bank({"Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
                  "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural Thickening", "Hernia"});
  } else if (key == "chexlocalize10") {
    b = cxr_bank({"Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Lesion", "Airspace Opacity", "Edema",
                  "Consolidation", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Support Devices"});
  } else if (key == "siim") {
    b = cxr_bank({"Pneumothorax"});
  } else if (key == "rsna") {
    b = cxr_bank({"Pneumonia"});
  } else if (key == "phantom") {
    std::vector<std::string> cats;
    for (auto f : data::phantom::seen_findings()) cats.push_back(data::phantom::category(f));
    b = cxr_bank(cats);
  } else if (template_table().count(key)) {
    const auto& d = template_table().at(key);
    b.modality = d.modality;
    b.mode = ClassifyMode::kMultiClass;
    b.classes = template_class_prompts(key);
  } else {
    throw Error("unknown prompt bank '" + name + "' (built-in: " + join(builtin_bank_names()) +
                "; or give a JSON prompt file)");
  }
  b.name = key;
  return b;
}

PromptBank read_prompt_bank(const std::string& path) {
  const auto j = with_context(path, [&] { return nlohmann::json::parse(read_file(path)); });
  if (!j.is_object()) throw Error(path + ": expected a JSON object with \"classes\" and/or \"categories\"");
  static const std::set<std::string> kKeys = {"mode", "modality", "dataset", "categories", "classes"};
  for (const auto& [k, v] : j.items())
    if (!kKeys.count(k)) throw Error(path + ": unknown key '" + k + "' (known: mode, modality, dataset, categories, classes)");
  PromptBank b;
  b.name = path;
  b.modality = ascii_lower(j.value("modality", std::string("chest x-ray")));
  if (b.modality != "chest x-ray" && b.modality != "pathology" && b.modality != "fundus" && b.modality != "custom")
    throw Error(path + ": modality '" + b.modality + "' is not one of chest x-ray, pathology, fundus, custom");
  const std::string dataset = j.value("dataset", std::string());
  b.mode = with_context(path, [&] {
    return parse_classify_mode(j.value("mode", std::string(b.modality == "chest x-ray" ? "binary" : "multiclass")));
  });
  if (j.contains("categories")) {
    const auto cats = string_list(j["categories"], path + ": categories");
    if (b.modality == "chest x-ray") {
      for (const auto& c : cats) b.classes.push_back(cxr_class_prompts(c));
    } else {
      if (dataset.empty()) throw Error(path + ": categories for modality '" + b.modality + "' need a \"dataset\" (known: " + join(known_datasets()) + ")");
      const auto all = with_context(path, [&] { return template_class_prompts(dataset); });
      for (const auto& c : cats) {
        const auto it = std::find_if(all.begin(), all.end(), [&](const ClassPrompts& p) { return p.name == c; });
        if (it == all.end()) throw Error(path + ": category '" + c + "' is not a class of dataset '" + dataset + "'");
        b.classes.push_back(*it);
      }
    }
  } else if (!dataset.empty()) {
    b.classes = with_context(path, [&] { return template_class_prompts(dataset); });
  }
  if (j.contains("classes")) {
    if (!j["classes"].is_object()) throw Error(path + ": \"classes\" must be an object {name: {pos: [...], neg: [...]}}");
    for (const auto& [name, spec] : j["classes"].items()) {
      const std::string where = path + ": classes." + name;
      if (!spec.is_object()) throw Error(where + ": expected {\"pos\": [...], \"neg\": [...]}");
      for (const auto& [k, v] : spec.items())
        if (k != "pos" && k != "neg") throw Error(where + ": unknown key '" + k + "' (known: pos, neg)");
      ClassPrompts c;
      c.name = name;
      if (spec.contains("pos")) c.pos = string_list(spec["pos"], where + ".pos");
      if (spec.contains("neg")) c.neg = string_list(spec["neg"], where + ".neg");
      if (c.neg.empty() && b.mode == ClassifyMode::kBinary) c.neg = {"no " + name + ". "};
      const auto it = std::find_if(b.classes.begin(), b.classes.end(), [&](const ClassPrompts& p) { return p.name == name; });
      if (it != b.classes.end()) {
        if (!c.pos.empty()) it->pos = c.pos;
        if (spec.contains("neg")) it->neg = c.neg;
      } else {
        b.classes.push_back(c);
      }
    }
  }
  with_context(path, [&] { validate(b); });
  return b;
}

void validate(const PromptBank& bank) {
  if (bank.classes.empty()) throw Error("prompt bank '" + bank.name + "' has no classes");
  std::set<std::string> seen;
  for (const auto& c : bank.classes) {
    if (c.name.empty()) throw Error("prompt bank '" + bank.name + "': a class has an empty name");
    if (!seen.insert(c.name).second) throw Error("prompt bank '" + bank.name + "': class '" + c.name + "' appears twice");
    if (c.pos.empty()) throw Error("prompt bank '" + bank.name + "': class '" + c.name + "' has no positive prompts");
    // A blank prompt is a mistake; one that only cleans to nothing ("finding", the authors' "No
    // Finding" negative) is the authors' behaviour and stays allowed.
    for (const auto* set : {&c.pos, &c.neg})
      for (const auto& p : *set)
        if (p.find_first_not_of(" \t\r\n") == std::string::npos)
          throw Error("prompt bank '" + bank.name + "': class '" + c.name + "' has an empty prompt");
    if (bank.mode == ClassifyMode::kBinary && c.neg.empty())
      throw Error("prompt bank '" + bank.name + "': class '" + c.name + "' has no negative prompts (binary mode needs them)");
  }
  if (bank.mode == ClassifyMode::kMultiClass && bank.classes.size() < 2)
    throw Error("prompt bank '" + bank.name + "': multi-class mode needs at least 2 classes");
}

std::string to_string(ClassifyMode mode) { return mode == ClassifyMode::kBinary ? "binary" : "multiclass"; }

ClassifyMode parse_classify_mode(const std::string& text) {
  const std::string t = ascii_lower(text);
  if (t == "binary") return ClassifyMode::kBinary;
  if (t == "multiclass" || t == "multi-class") return ClassifyMode::kMultiClass;
  throw Error("classification mode '" + text + "' is not binary or multiclass");
}

}  // namespace afloc::infer
