"""Extract HTTP request vectors from the httptools 0.9.0 sdist into httptools_vectors.json.

usage: python extract_httptools.py httptools-0.9.0.tar.gz   (from
       `pip download --no-deps --no-binary :all: httptools==0.9.0`)

Sources inside the sdist (data only; no code is copied):
- vendor/http-parser/test.c: the `requests[]` table (.name/.raw) and every test_simple(request, HPE_x)
  call, with its expected upstream errno; the all_methods[]/bad_methods[] loops ("M / HTTP/1.1\r\n\r\n");
- tests/test_parser.py: the module-level request constants.
Each vector: {"name", "source", "raw" (bytes as latin-1 text), "upstream"}; "upstream" is
"HPE_OK"/"HPE_x" from test.c or "accept" for the requests[] table and test_parser.py.
"""
import ast
import json
import os
import re
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
STR = r'"(?:[^"\\\n]|\\.)*"'
STRS = r'((?:%s\s*)+)' % STR


def c_unescape(lits):
    out = bytearray()
    for lit in re.findall(STR, lits):
        s = lit[1:-1].encode("utf-8")
        i = 0
        while i < len(s):
            c = s[i]
            if c != 0x5C:
                out.append(c)
                i += 1
                continue
            n = s[i + 1:i + 2]
            i += 2
            simple = {b"r": 13, b"n": 10, b"t": 9, b"\\": 92, b'"': 34, b"'": 39, b"0": None}
            if n in b"01234567" and n:
                m = re.match(rb"[0-7]{1,3}", s[i - 1:])
                out.append(int(m.group(0), 8) & 0xFF)
                i += len(m.group(0)) - 1
            elif n == b"x":
                m = re.match(rb"[0-9a-fA-F]+", s[i:])
                out.append(int(m.group(0), 16) & 0xFF)
                i += len(m.group(0))
            elif n in simple:
                out.append(simple[n])
            else:
                raise ValueError("escape %r" % n)
    return bytes(out)


def from_test_c(src):
    src = re.sub(r"#if 0.*?#endif", "", src, flags=re.S)
    vectors = []
    a = src.index("const struct message requests[]")
    b = src.index("const struct message responses[]")
    for entry in re.split(r"[{,]\s*\{\s*\.name\s*=", src[a:b])[1:]:
        name = re.match(r"\s*(%s)" % STR, entry)
        raw = re.search(r"\.raw\s*=\s*" + STRS, entry)
        if name and raw:
            vectors.append({"name": c_unescape(name.group(1)).decode(), "source": "http-parser/test.c requests[]",
                            "raw": c_unescape(raw.group(1)), "upstream": "accept"})
    variables = {m.group(1): m.group(2) for m in re.finditer(r"const char \*(\w+)\s*=\s*" + STRS + ";", src)}
    k = 0
    for m in re.finditer(r"test_simple\s*\(\s*(%s|\w+)\s*,\s*(\w+)\s*\)" % STRS[1:-1], src):
        arg = m.group(1)
        lits = variables.get(arg) if not arg.startswith('"') else arg
        if lits is None:
            continue
        k += 1
        vectors.append({"name": "test_simple %d" % k, "source": "http-parser/test.c test_simple()",
                        "raw": c_unescape(lits), "upstream": m.group(2)})
    for arr, expect in (("all_methods", "HPE_OK"), ("bad_methods", "HPE_INVALID_METHOD")):
        body = re.search(r"static const char \*%s\[\]\s*=\s*\{(.*?)\};" % arr, src, re.S).group(1)
        body = re.sub(r"//[^\n]*", "", body)
        for lit in re.findall(STR, body):
            method = c_unescape(lit)
            vectors.append({"name": "%s %s" % (arr, method.decode()), "source": "http-parser/test.c %s[]" % arr,
                            "raw": method + b" / HTTP/1.1\r\n\r\n", "upstream": expect})
    return vectors


def from_test_parser(src):
    vectors = []
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                val = eval(compile(ast.Expression(node.value), "<vec>", "eval"), {"__builtins__": {}})
            except Exception:
                continue
            if isinstance(val, bytes) and re.match(rb"[A-Z]+ \S+ HTTP/1\.\d\r\n", val):
                vectors.append({"name": node.targets[0].id, "source": "httptools tests/test_parser.py",
                                "raw": val, "upstream": "accept"})
    return vectors


def main(tarball):
    with tarfile.open(tarball) as tf:
        def read(suffix):
            member = [m for m in tf.getmembers() if m.name.endswith(suffix)][0]
            return tf.extractfile(member).read().decode("utf-8")
        vectors = from_test_c(read("vendor/http-parser/test.c")) + from_test_parser(read("tests/test_parser.py"))
    for v in vectors:
        v["raw"] = v["raw"].decode("latin-1")
    with open(os.path.join(HERE, "httptools_vectors.json"), "w") as f:
        json.dump(vectors, f, indent=1)
        f.write("\n")
    print("%d vectors" % len(vectors))


if __name__ == "__main__":
    main(sys.argv[1])
